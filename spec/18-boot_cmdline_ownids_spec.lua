-- One rule for vfio-pci.ids on every command-line target, and init's `--`.
--
-- The rule (docs/REFERENCE.md "The kernel command line"): after an apply with --ids the ids on the
-- line are the user's own + exactly the ones this apply names; ids an earlier apply added
-- that this one does not name come out, ids the user wrote never do; an apply without
-- --ids leaves them. modprobe.d's own file does the same (`options vfio-pci ids=` is
-- rewritten with this run's ids). The oracles are the tools' readers: bash sources GRUB's
-- files as grub-mkconfig does, mkinitcpio's `grep '^[^#]' | tr` joins its UKI sources,
-- the stand-in grubby edits BLS entries, and the words are counted by the kernel's rule
-- (a lone `--` ends the kernel's parameters).
local h = require "helpers"
local v = require "vfioinit"

local APPLETS = "sh cat echo printf mkdir mktemp find cpio mv rm sleep test ["
local STANDIN_BOOSTER = h.project .. "/spec/fixtures/standin-booster"
local root_it = h.chroot_it(it, pending)

local DEBIAN_MKCONFIG = "#!/bin/sh\n. /etc/default/grub\nfor x in ${sysconfdir}/default/grub.d/*.cfg ; do\n  . \"$x\"\ndone\n"
local UPSTREAM_MKCONFIG = "#!/bin/sh\nif test -f ${sysconfdir}/default/grub ; then\n  . ${sysconfdir}/default/grub\nfi\n"

local A, B, U = "1af4:1000", "1af4:1041", "10de:1b80"

local function words_of(text)
  local t = {}
  for w in (text or ""):gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- The kernel's words: up to a lone `--`.
local function kernel_words(list)
  local t = {}
  for _, w in ipairs(list) do
    if w == "--" then break end
    t[#t + 1] = w
  end
  return t
end

-- The set of ids of every vfio-pci.ids word the kernel reads (`-` and `_` are one).
local function ids(list)
  local set, n = {}, 0
  for _, w in ipairs(kernel_words(list)) do
    local name, value = w:match("^([^=]*)=(.*)$")
    if name and name:gsub("-", "_") == "vfio_pci.ids" then
      for x in value:gmatch("[^,]+") do
        if not set[x:lower()] then set[x:lower()] = true; n = n + 1 end
      end
    end
  end
  local out = {}
  for x in pairs(set) do out[#out + 1] = x end
  table.sort(out)
  return out, n
end

local function has(list, word)
  for _, w in ipairs(kernel_words(list)) do if w == word then return true end end
  return false
end

local function apply(root, ids_)
  local r = v.update_initramfs({ root = root, ids = ids_, cmdline = true, rebuild = false })
  assert.is_true(r.ok, r.error)
  return r
end

-- revert; in these roots (not chrooted) grub.cfg cannot be regenerated afterwards, which
-- is the only failure allowed: the files are restored before it runs.
local function revert(root)
  local ok, err = v.revert({ root = root })
  if not ok then assert.matches("^update%-grub: ", err) end
end

local function grub_root(default_grub, mkconfig, extra)
  local files = { ["/etc/initramfs-tools/modules"] = "# modules\n",
    ["/usr/sbin/grub-mkconfig"] = mkconfig or DEBIAN_MKCONFIG }
  if default_grub then files["/etc/default/grub"] = default_grub end
  for k, x in pairs(extra or {}) do files[k] = x end
  local root = h.make_root({ os = { ID = "debian" }, files = files,
    exec = { "/usr/sbin/update-initramfs", "/usr/sbin/update-grub" } })
  h.install_kernel(root, "cloud")
  return root
end

-- bash, sourcing the files as grub-mkconfig does: the words 10_linux puts on a normal entry.
local function grub_words(root)
  local script = ("sysconfdir=%s/etc; . %s/etc/default/grub 2>/dev/null; for x in %s/etc/default/grub.d/*.cfg; do "
    .. "[ -e \"$x\" ] && . \"$x\"; done; echo \"$GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT\""):format(root, root, root)
  local out, ok = h.sh("bash -c " .. h.q(script) .. " 2>&1")
  assert(ok, out)
  return words_of(out)
end

local function kroot(files)
  files["/etc/initramfs-tools/modules"] = ""
  local root = h.make_root({ os = { ID = "debian" }, files = files, exec = { "/usr/sbin/update-initramfs" } })
  return root, h.install_kernel(root, "cloud")
end

local PRESET = 'ALL_kver="/boot/vmlinuz-linux"\nPRESETS=(\'default\')\ndefault_uki="/efi/EFI/Linux/arch-linux.efi"\n'
local function uroot(files)
  files["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev modconf)\n"
  files["/etc/mkinitcpio.d/linux.preset"] = PRESET
  local root = h.make_root({ os = { ID = "arch" }, files = files, exec = { "/usr/bin/mkinitcpio" } })
  h.install_kernel(root, "cloud")
  return root
end

-- mkinitcpio v41's own expression over its UKI command-line sources, in its order.
local function embedded(root)
  local script = ("cd %s && f=; for c in etc/kernel/cmdline usr/lib/kernel/cmdline; do [ -f $c ] && { f=$c; break; }; done; "
    .. "d=$(find etc/cmdline.d -xtype f -name '*.conf' 2>/dev/null | LC_ALL=C.UTF-8 sort -V); "
    .. "grep -ha -- '^[^#]' $f $d | tr -s '\\n' ' '"):format(h.q(root))
  return words_of((h.sh("bash -c " .. h.q(script))))
end

-- A before B: the second apply's ids replace the first's; the user's stay; no --ids keeps.
local function two_applies(root, read, user)
  apply(root, A)
  local want = { A }
  for _, x in ipairs(user or {}) do want[#want + 1] = x end
  table.sort(want)
  assert.are.same(want, (ids(read())))
  apply(root, B)
  want = { B }
  for _, x in ipairs(user or {}) do want[#want + 1] = x end
  table.sort(want)
  local got, n = ids(read())
  assert.are.same(want, got)
  assert.are.equal(#want, n, "each id once")
  -- no --ids: what is there stays
  apply(root, nil)
  assert.are.same(want, (ids(read())))
  assert.is_true(has(read(), "intel_iommu=on"))
  assert.is_true(has(read(), "iommu=pt"))
end

describe("--ids B after --ids A: one rule on every command-line target", function()
  it("modprobe.d (the rule's model): options vfio-pci ids= holds exactly this apply's ids", function()
    local root = kroot({})
    finally(function() h.rm(root) end)
    assert.is_true(v.update_initramfs({ root = root, ids = A, rebuild = false }).ok)
    assert.is_true(v.update_initramfs({ root = root, ids = B, rebuild = false }).ok)
    local text = h.readfile(root .. "/etc/modprobe.d/vfioinit.conf")
    assert.truthy(text:find("\noptions vfio-pci ids=" .. B .. "\n", 1, true), text)
  end)

  it("GRUB drop-in: only B", function()
    local text = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    local root = grub_root(text)
    finally(function() h.rm(root) end)
    two_applies(root, function() return grub_words(root) end)
    assert.are.equal(text, h.readfile(root .. "/etc/default/grub"))
    revert(root)
    assert.are.equal(text, h.readfile(root .. "/etc/default/grub"))
    assert.is_nil(h.readfile(root .. "/etc/default/grub.d/vfioinit.cfg"))
  end)

  it("GRUB drop-in with the user's own vfio_pci.ids in /etc/default/grub: the user's id and B", function()
    local text = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="vfio_pci.ids=10DE:1B80"\n'
    local root = grub_root(text)
    finally(function() h.rm(root) end)
    two_applies(root, function() return grub_words(root) end, { U })
    -- the user's spelling of the word and of the id stays
    assert.truthy(h.readfile(root .. "/etc/default/grub"):find('GRUB_CMDLINE_LINUX="vfio_pci.ids=10DE:1B80,' .. B .. '"', 1, true))
    revert(root)
    assert.are.equal(text, h.readfile(root .. "/etc/default/grub"))
  end)

  it("GRUB in place (no drop-ins): only B; with the user's id: it and B", function()
    for _, c in ipairs({
      { 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="rhgb quiet"\n' },
      { "GRUB_TIMEOUT=5\n" },
      { 'GRUB_CMDLINE_LINUX_DEFAULT="quiet vfio-pci.ids=10de:1b80"\n', { U } },
    }) do
      local root = grub_root(c[1], UPSTREAM_MKCONFIG)
      two_applies(root, function() return grub_words(root) end, c[2])
      revert(root)
      assert.are.equal(c[1], h.readfile(root .. "/etc/default/grub"))
      h.rm(root)
    end
  end)

  it("/etc/kernel/cmdline in place: the user's id and B; revert gives the file back byte for byte", function()
    local text = "root=/dev/vda1 ro vfio-pci.ids=10de:1b80 quiet\n"
    local root = kroot({ ["/etc/kernel/cmdline"] = text })
    finally(function() h.rm(root) end)
    local read = function() return words_of(h.readfile(root .. "/etc/kernel/cmdline")) end
    two_applies(root, read, { U })
    local w = read()
    assert.are.same({ "root=/dev/vda1", "ro" }, { w[1], w[2] })
    assert.is_true((v.revert({ root = root })))
    assert.are.equal(text, h.readfile(root .. "/etc/kernel/cmdline"))
  end)

  it("/etc/kernel/cmdline created by vfioinit (layout=uki): only B", function()
    local root = kroot({ ["/etc/kernel/install.conf"] = "layout=uki\n",
      ["/usr/lib/kernel/cmdline"] = "root=/dev/vda1 rw\n" })
    finally(function() h.rm(root) end)
    two_applies(root, function() return words_of(h.readfile(root .. "/etc/kernel/cmdline")) end)
    assert.is_true((v.revert({ root = root })))
    assert.is_nil(h.readfile(root .. "/etc/kernel/cmdline"))
  end)

  -- the words a created file started from are vfioinit's record: what the target boots holds A
  -- once it booted with the file (kernel-install wrote A into its entry), and must not make A
  -- the user's
  it("/etc/kernel/cmdline created from the target's entry, after booting with A: --ids B gives only B", function()
    local root, kver = kroot({ ["/etc/kernel/install.conf"] = "layout=bls\n" })
    finally(function() h.rm(root) end)
    local entry = root .. "/boot/loader/entries/debian.conf"
    local user = { "root=/dev/vda1", "rw", "quiet", "vfio_pci.ids=" .. U }
    local function boots_with(line)
      h.writefile(entry, ("title Debian\nversion %s\nlinux /vmlinuz-%s\noptions %s\n"):format(kver, kver, line))
    end
    boots_with(table.concat(user, " "))
    local file = root .. "/etc/kernel/cmdline"
    apply(root, A)
    local function sorted(t) table.sort(t); return t end
    assert.are.same(sorted({ A, U }), (ids(words_of(h.readfile(file)))))
    boots_with((h.readfile(file):gsub("\n$", "")))  -- `kernel-install add`, then a reboot
    apply(root, B)
    local w = words_of(h.readfile(file))
    local got, n = ids(w)
    assert.are.same(sorted({ B, U }), got)
    assert.are.equal(2, n, "each id once")
    for _, x in ipairs({ "root=/dev/vda1", "rw", "quiet" }) do assert.is_true(has(w, x), x) end
    assert.is_true((v.revert({ root = root })))
    assert.is_nil(h.readfile(file))
  end)

  it("/etc/cmdline.d/vfioinit.conf (mkinitcpio UKIs): only B; the user's id in their own source stays", function()
    local root = uroot({ ["/etc/cmdline.d/10-root.conf"] = "# root\nroot=/dev/vda2 rw\n" })
    finally(function() h.rm(root) end)
    two_applies(root, function() return embedded(root) end)
    h.rm(root)
    local mine = "root=/dev/vda2 rw vfio_pci.ids=10de:1b80\n"
    root = uroot({ ["/usr/lib/kernel/cmdline"] = mine })
    two_applies(root, function() return embedded(root) end, { U })
    assert.is_true((v.revert({ root = root })))
    assert.are.equal(mine, h.readfile(root .. "/usr/lib/kernel/cmdline"))
  end)

  it("an id the user wrote by hand after an apply is never taken out", function()
    local root = kroot({ ["/etc/kernel/cmdline"] = "root=/dev/vda1 quiet\n" })
    finally(function() h.rm(root) end)
    apply(root, A)
    local p = root .. "/etc/kernel/cmdline"
    h.writefile(p, (h.readfile(p):gsub("vfio%-pci%.ids=" .. A, "vfio-pci.ids=" .. A .. "," .. U)))
    apply(root, B)
    local got = ids(words_of(h.readfile(p)))
    -- who wrote A is no longer known once the file was edited: nothing is taken out
    assert.are.same({ U, A, B }, got)
  end)

  it("grubby and kernelstub records: the second apply replaces A by B, revert puts back the user's word", function()
    local ENTRY = "title Fedora Linux\nversion 6.1\nlinux /vmlinuz-6.1\ninitrd /initramfs-6.1.img\n"
      .. "options root=/dev/vda1 ro vfio_pci.ids=10de:1b80,1af4:1000 rhgb\n"
    for _, tool in ipairs({ "grubby", "kernelstub" }) do
      -- the first apply recorded its merge, and the tool ran it (the entry holds U,A)
      local record = ("# first apply\nreplace vfio_pci.ids=10de:1b80 vfio_pci.ids=10de:1b80,%s\nadd intel_iommu=on\n"
        .. "add iommu=pt\n"):format(A)
      local root = h.make_root({ os = { ID = "fedora" }, files = { ["/etc/dracut.conf"] = "",
        ["/boot/loader/entries/f.conf"] = ENTRY:gsub("options root", "options intel_iommu=on iommu=pt root"),
        ["/etc/vfioinit/" .. tool .. ".cmdline"] = record },
        exec = { "/usr/bin/dracut", "/usr/sbin/" .. tool } })
      h.install_kernel(root, "cloud")
      local plan = assert(v.plan({ root = root, ids = B, cmdline = true }))
      local rec
      for _, c in ipairs(plan.changes) do if c.path == "/etc/vfioinit/" .. tool .. ".cmdline" then rec = c.after end end
      assert.truthy(rec and rec:find(("\nreplace vfio_pci.ids=10de:1b80,%s vfio_pci.ids=10de:1b80,%s\n"):format(A, B), 1, true),
        tool .. ": " .. tostring(rec))
      -- revert: one command per parameter, back to the word the first apply found
      local undo = require("vfioinit.boot.loaders." .. tool).undo(rec)
      local flat = {}
      for _, argv in ipairs(undo) do flat[#flat + 1] = table.concat(argv, " ") end
      flat = table.concat(flat, "\n")
      if tool == "grubby" then
        assert.are.equal("grubby --update-kernel=ALL --remove-args=iommu=pt intel_iommu=on\n"
          .. "grubby --update-kernel=ALL --args=vfio_pci.ids=10de:1b80", flat)
      else
        assert.are.equal(("kernelstub -d iommu=pt intel_iommu=on vfio_pci.ids=10de:1b80,%s\n"
          .. "kernelstub -a vfio_pci.ids=10de:1b80"):format(B), flat)
      end
      h.rm(root)
    end
  end)
end)

-- A root the specs chroot into: a static busybox and the booster stand-in.
local function busybox_booster(root)
  h.sh("mkdir -p " .. h.q(root .. "/bin") .. " " .. h.q(root .. "/usr/bin") .. " " .. h.q(root .. "/usr/sbin")
    .. " " .. h.q(root .. "/boot") .. " " .. h.q(root .. "/tmp"))
  h.sh("cp " .. h.q(h.static_busybox()) .. " " .. h.q(root .. "/bin/busybox"))
  h.sh("cd " .. h.q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
  local standin = h.readfile(STANDIN_BOOSTER)
    :gsub('(echo vfio_pci > "%$moddir/pci/vfio%-pci.ko"\n)', '%1\techo vfio_virqfd > "$moddir/vfio_virqfd.ko"\n'
      .. '\tmkdir -p "$stage/etc/modprobe.d" && cat /etc/modprobe.d/vfioinit.conf > "$stage/etc/modprobe.d/vfioinit.conf"\n')
    :gsub("%- vfio_pci\\n", "- vfio_pci\\n- vfio_virqfd\\n")
  h.writefile(root .. "/usr/bin/booster", standin, 493)
end

describe("grubby (stand-in, chrooted): two applies, then revert", function()
  root_it("the entry holds the user's id and B, and revert gives back the user's words", function()
    local ENTRY = "title Fedora Linux\nversion 6.1\nlinux /vmlinuz-6.1\ninitrd /booster-6.1.img\n"
      .. "options root=/dev/vda1 ro vfio_pci.ids=10de:1b80 rhgb\n"
    local root = h.make_root({ os = { ID = "fedora" }, files = { ["/etc/booster.yaml"] = "" } })
    finally(function() h.rm(root) end)
    local kver = h.install_kernel(root, "cloud")
    local entry = ENTRY:gsub("6%.1", kver)
    h.writefile(root .. "/boot/loader/entries/a.conf", entry)
    busybox_booster(root)
    h.sh("cp " .. h.q(h.project .. "/spec/fixtures/standin-grubby") .. " " .. h.q(root .. "/usr/sbin/grubby"))
    local function options()
      return words_of(h.sh("sed -n 's/^options //p' " .. h.q(root .. "/boot/loader/entries/a.conf")))
    end
    for _, x in ipairs({ A, B }) do
      local r = v.update_initramfs({ root = root, ids = x, cmdline = true, timeout = 60 })
      assert.is_true(r.ok, r.error)
    end
    assert.are.same({ U, B }, (ids(options())))
    assert.is_true((v.revert({ root = root })))
    local function sorted(t) table.sort(t); return t end
    assert.are.same(sorted(words_of(entry:match("\noptions ([^\n]*)"))), sorted(options()))
  end)
end)

describe("init's `--`: what follows it is not the kernel's", function()
  it("a vfio-pci.ids= or intel_iommu=off after -- is neither merged, nor counted, nor refused", function()
    local cmdline = require "vfioinit.edit.cmdline"
    local IDS = { name = "vfio-pci.ids", value = A, list = true }
    local IOMMU = { name = "intel_iommu", value = "on", list = true, refuse = { "off" } }
    local s = "root=/dev/vda1 -- intel_iommu=off vfio-pci.ids=" .. A
    assert.is_false((cmdline.has(s, { IDS })))
    assert.are.equal("root=/dev/vda1 intel_iommu=on vfio-pci.ids=" .. A .. " -- intel_iommu=off vfio-pci.ids=" .. A,
      (cmdline.add(s, { IOMMU, IDS })))
    assert.are.same({}, cmdline.values(s, "vfio_pci.ids"))
    assert.are.equal(s, cmdline.drop_values(s, "vfio-pci.ids", { [A] = true }))
  end)

  it("/etc/kernel/cmdline whose -- is on an earlier line: the parameters go before it", function()
    local text = "root=/dev/vda1 -- single\nvfio-pci.ids=10de:1b80 intel_iommu=off\n"
    local root = kroot({ ["/etc/kernel/cmdline"] = text })
    finally(function() h.rm(root) end)
    apply(root, A)
    local w = words_of(h.readfile(root .. "/etc/kernel/cmdline"))
    assert.are.same({ A }, (ids(w)))
    assert.is_true(has(w, "intel_iommu=on"))
    assert.is_true(has(w, "iommu=pt"))
    -- init's words are kept as they were
    assert.truthy(h.readfile(root .. "/etc/kernel/cmdline"):find("\nvfio-pci.ids=10de:1b80 intel_iommu=off\n", 1, true))
  end)

  it("mkinitcpio: a -- in /usr/lib/kernel/cmdline keeps the parameters out of /etc/cmdline.d, which comes after it", function()
    local root = uroot({ ["/usr/lib/kernel/cmdline"] = "root=/dev/vda2 rw -- single\n" })
    finally(function() h.rm(root) end)
    apply(root, A)
    local w = embedded(root)
    assert.are.same({ A }, (ids(w)))
    assert.is_true(has(w, "intel_iommu=on"))
    assert.is_true(has(w, "iommu=pt"))
  end)

  it("GRUB: a -- in GRUB_CMDLINE_LINUX_DEFAULT (in place or with the drop-in): the parameters go before it", function()
    for _, mk in ipairs({ UPSTREAM_MKCONFIG, DEBIAN_MKCONFIG }) do
      for _, text in ipairs({ 'GRUB_CMDLINE_LINUX_DEFAULT="quiet -- single"\n', "GRUB_CMDLINE_LINUX_DEFAULT='-- single'\n" }) do
        local root = grub_root(text, mk)
        apply(root, A)
        local w = grub_words(root)
        assert.are.same({ A }, (ids(w)), text)
        assert.is_true(has(w, "intel_iommu=on"), text)
        assert.is_true(has(w, "iommu=pt"), text)
        assert.truthy(table.concat(w, " "):find("-- single", 1, true), text)
        -- a second apply finds everything in place
        assert.are.equal(0, #assert(v.plan({ root = root, ids = A, cmdline = true })).changes, text)
        h.rm(root)
      end
    end
  end)

  it("GRUB: a -- in GRUB_CMDLINE_LINUX leaves no place for a kernel parameter: refused, naming the line", function()
    local root = grub_root('GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="ro -- single"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    finally(function() h.rm(root) end)
    local before = h.tree_hash(root)
    local plan, err = v.plan({ root = root, ids = A, cmdline = true })
    assert.is_nil(plan)
    assert.matches("^/etc/default/grub:2: GRUB_CMDLINE_LINUX holds `%-%-`", err)
    assert.are.equal(before, h.tree_hash(root))
  end)

  it("grubby and kernelstub write at the end of the options: with a -- there, refused, naming the entry", function()
    for _, tool in ipairs({ "grubby", "kernelstub" }) do
      local root = h.make_root({ os = { ID = "fedora" }, files = { ["/etc/dracut.conf"] = "",
        ["/boot/loader/entries/f.conf"] = "title F\nversion 6.1\nlinux /vmlinuz-6.1\noptions root=/dev/vda1 -- single\n" },
        exec = { "/usr/bin/dracut", "/usr/sbin/" .. tool } })
      h.install_kernel(root, "cloud")
      local before = h.tree_hash(root)
      local plan, err = v.plan({ root = root, ids = A, cmdline = true })
      assert.is_nil(plan)
      assert.matches("^/boot/loader/entries/f%.conf:4: options hold `%-%-`", err)
      assert.truthy(err:find(tool, 1, true), err)
      assert.are.equal(before, h.tree_hash(root))
      h.rm(root)
    end
  end)

  it("grub.cfg read-back: a linux line whose parameters are after -- lacks them", function()
    local root = grub_root('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    finally(function() h.rm(root) end)
    local kver = h.sh("ls " .. h.q(root .. "/lib/modules")):match("%S+")
    local entry = "menuentry 'Debian' {\n  linux /boot/vmlinuz-%s root=/dev/vda1 %s\n}\n"
    h.writefile(root .. "/boot/grub/grub.cfg", entry:format(kver, "-- intel_iommu=on iommu=pt vfio-pci.ids=" .. A)
      .. entry:format(kver, "intel_iommu=on iommu=pt vfio-pci.ids=" .. A .. " -- intel_iommu=off"))
    local ctx = require("vfioinit.context").new({ root = root })
    local wants = require("vfioinit.boot.cmdline.words").wants({ A })
    local list = assert(require("vfioinit.boot.cmdline").readback_for(ctx, "grub", wants, kver))
    assert.are.equal(2, #list)
    assert.is_false(list[1].ok)
    assert.are.equal("intel_iommu", list[1].missing)
    assert.is_true(list[2].ok)  -- intel_iommu=off after -- is init's: not the kernel's, not refused
  end)

  local uki_it = require("uki_helpers").guard(it, pending)
  uki_it("UKI .cmdline read-back: parameters after -- are lacking", function()
    local uh = require "uki_helpers"
    local root = kroot({ ["/etc/kernel/cmdline"] = "root=/dev/vda1\n" })
    finally(function() h.rm(root) end)
    local kver = h.sh("ls " .. h.q(root .. "/lib/modules")):match("%S+")
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    local initrd = uh.initramfs(dir, { ["init"] = "#!/bin/sh\n" }, "none")
    h.sh("mkdir -p " .. h.q(root .. "/boot/EFI/Linux"))
    uh.uki(dir, root .. "/boot/EFI/Linux/a.efi", { uname = kver, initrd = initrd,
      cmdline = "root=/dev/vda1 -- intel_iommu=on iommu=pt vfio-pci.ids=" .. A })
    uh.uki(dir, root .. "/boot/EFI/Linux/b.efi", { uname = kver, initrd = initrd,
      cmdline = "root=/dev/vda1 intel_iommu=on iommu=pt vfio-pci.ids=" .. A .. " -- intel_iommu=off" })
    local ctx = require("vfioinit.context").new({ root = root })
    local wants = require("vfioinit.boot.cmdline.words").wants({ A })
    local list = assert(require("vfioinit.boot.cmdline").readback_for(ctx, "kernel_cmdline", wants, kver))
    local by = {}
    for _, e in ipairs(list) do by[e.entry] = e end
    assert.is_false(by["uki: /boot/EFI/Linux/a.efi"].ok)
    assert.is_true(by["uki: /boot/EFI/Linux/b.efi"].ok)
  end)

  it("verify reads a boot entry whose parameters are after -- as lacking them", function()
    local root = kroot({ ["/etc/kernel/cmdline"] = "root=/dev/vda1 intel_iommu=on iommu=pt vfio-pci.ids=" .. A .. "\n" })
    finally(function() h.rm(root) end)
    local kver = h.sh("ls " .. h.q(root .. "/lib/modules")):match("%S+")
    h.writefile(root .. "/boot/loader/entries/x.conf", ("title x\nversion %s\nlinux /vmlinuz-%s\n"
      .. "options root=/dev/vda1 -- intel_iommu=on iommu=pt vfio-pci.ids=%s\n"):format(kver, kver, A))
    local st = assert(v.status({ root = root, ids = A, cmdline = true }))
    local seen = 0
    for _, e in ipairs(st.cmdline or {}) do
      if e.entry == "bls: x.conf" then seen = seen + 1; assert.is_false(e.ok); assert.are.equal("intel_iommu", e.missing) end
    end
    assert.are.equal(1, seen)
  end)
end)
