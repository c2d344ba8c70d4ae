-- The kernel command line, opt-in (`--cmdline`, Lua `cmdline = true`): intel_iommu=on,
-- iommu=pt and vfio-pci.ids= go where the root's boot path reads them (GRUB's config,
-- /etc/kernel/cmdline, /etc/cmdline.d for mkinitcpio UKIs), through the plan, and GRUB's
-- grub.cfg is regenerated and read back. The oracles are the tools' own readers: bash
-- sources GRUB's files as grub-mkconfig does, mkinitcpio's `grep '^[^#]' | tr -s` joins
-- its UKI sources, and the kernel's word rule (vfio-pci = vfio_pci) counts parameters.
local h = require "helpers"
local v = require "vfioinit"

local STANDIN_GRUB = h.project .. "/spec/fixtures/standin-grub-mkconfig"
local STANDIN_BOOSTER = h.project .. "/spec/fixtures/standin-booster"
local APPLETS = "sh cat echo printf mkdir mktemp find cpio mv rm sleep test ["
local root_it = h.chroot_it(it, pending)

-- GRUB's grub-mkconfig as Debian ships it: it sources /etc/default/grub.d/*.cfg.
local DEBIAN_MKCONFIG = "#!/bin/sh\n. /etc/default/grub\nfor x in ${sysconfdir}/default/grub.d/*.cfg ; do\n  . \"$x\"\ndone\n"
-- grub2-mkconfig as upstream GRUB ships it (Fedora, Arch): /etc/default/grub only.
local UPSTREAM_MKCONFIG = "#!/bin/sh\nif test -f ${sysconfdir}/default/grub ; then\n  . ${sysconfdir}/default/grub\nfi\n"

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
  local t = {}
  for w in out:gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- The words naming parameter `name` (the kernel's rule: `-` and `_` are one).
local function named(list, name)
  local key, out = name:gsub("-", "_"), {}
  for _, w in ipairs(list) do
    if (w:match("^([^=]*)") or w):gsub("-", "_") == key then out[#out + 1] = w end
  end
  return out
end

local function value_set(word)
  local s = {}
  for x in (word:match("=(.*)$") or ""):gmatch("[^,]+") do s[x:lower()] = true end
  return s
end

local function assert_params(list, ids)
  assert.are.same({ "intel_iommu=on" }, named(list, "intel_iommu"))
  assert.are.same({ "iommu=pt" }, named(list, "iommu"))
  local w = named(list, "vfio_pci.ids")
  assert.are.equal(1, #w, "one vfio-pci.ids word: " .. table.concat(w, " "))
  local got = value_set(w[1])
  for _, id in ipairs(ids) do assert.is_true(got[id], id .. " in " .. w[1]) end
end

describe("--cmdline with GRUB", function()
  it("is opt-in: without it no command-line file is planned", function()
    local root = grub_root('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    finally(function() h.rm(root) end)
    local plan = assert(v.plan({ root = root, ids = "1af4:1000" }))
    for _, c in ipairs(plan.changes) do assert.is_nil(c.path:match("grub"), c.path) end
  end)

  it("adds the parameters through /etc/default/grub.d/vfioinit.cfg where grub-mkconfig reads drop-ins", function()
    local text = '# mine\nGRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n'
    local root = grub_root(text)
    finally(function() h.rm(root) end)
    local before = grub_words(root)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    assert.are.equal(text, h.readfile(root .. "/etc/default/grub"))
    assert.is_not_nil(h.readfile(root .. "/etc/default/grub.d/vfioinit.cfg"))
    -- rebuild=false: grub.cfg is not regenerated, and the report says what to run
    assert.is_nil(r.regenerated)
    local noted = false
    for _, w in ipairs(r.warnings) do if w:find("not regenerated (no rebuild): run update-grub", 1, true) then noted = true end end
    assert.is_true(noted, table.concat(r.warnings, "\n"))
    local after = grub_words(root)
    assert_params(after, { "1af4:1000" })
    for _, w in ipairs(before) do assert.are.equal(1, #named(after, w:match("^[^=]*")), w) end
    -- a second plan has nothing left to do, and one without ids keeps them (as modprobe.d)
    assert.are.equal(0, #assert(v.plan({ root = root, ids = "1af4:1000", cmdline = true })).changes)
    assert.are.equal(0, #assert(v.plan({ root = root, cmdline = true })).changes)
  end)

  it("merges the ids into a vfio_pci.ids the config already has, where it is written", function()
    local root = grub_root('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="vfio_pci.ids=10DE:1B80 intel_iommu=on,igfx_off"\n')
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000,10de:1b80", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local after = grub_words(root)
    local w = named(after, "vfio-pci.ids")
    assert.are.equal(1, #w, table.concat(after, " "))
    assert.are.equal("vfio_pci.ids", w[1]:match("^[^=]*"))  -- the user's spelling stays
    assert.are.same({ ["10de:1b80"] = true, ["1af4:1000"] = true }, value_set(w[1]))
    assert.are.same({ "intel_iommu=on,igfx_off" }, named(after, "intel_iommu"))
    assert.are.same({ "iommu=pt" }, named(after, "iommu"))
  end)

  it("edits GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub where grub-mkconfig reads no drop-ins", function()
    for _, text in ipairs({
      'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="rhgb quiet"\nGRUB_DISABLE_RECOVERY="true"\n',
      "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=quiet\n",
      "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=''\n",
      "GRUB_TIMEOUT=5\n",
    }) do
      local root = grub_root(text, UPSTREAM_MKCONFIG)
      local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
      assert.is_true(r.ok, r.error)
      assert.is_nil(h.readfile(root .. "/etc/default/grub.d/vfioinit.cfg"))
      local after = grub_words(root)
      assert_params(after, { "1af4:1000" })
      -- every other line is kept byte for byte
      local new = h.readfile(root .. "/etc/default/grub")
      for line in text:gmatch("([^\n]*)\n") do
        if not line:match("^GRUB_CMDLINE_LINUX_DEFAULT=") then assert.is_truthy(new:find(line, 1, true), line) end
      end
      h.rm(root)
    end
  end)

  it("refuses what it must not override or cannot read, naming the file and line, writing nothing", function()
    local cases = {
      { 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off"\n', "^/etc/default/grub: .*intel_iommu=off" },
      { 'GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=soft"\n', "^/etc/default/grub: .*iommu=soft" },
      { 'X=1\nGRUB_CMDLINE_LINUX_DEFAULT="$(cat /etc/cmdline)"\n', "^/etc/default/grub:2: GRUB_CMDLINE_LINUX_DEFAULT" },
      { 'if true; then\n  GRUB_CMDLINE_LINUX="a"\nfi\n', "^/etc/default/grub:2: GRUB_CMDLINE_LINUX is set inside an if block" },
      { 'GRUB_CMDLINE_LINUX_DEFAULT="quiet\n', "^/etc/default/grub:%d+: " },
      { 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', "^/etc/default/grub.d/zz%-late.cfg:1: sets GRUB_CMDLINE_LINUX_DEFAULT after",
        { ["/etc/default/grub.d/zz-late.cfg"] = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n' } },
    }
    for _, c in ipairs(cases) do
      local root = grub_root(c[1], nil, c[3])
      local before = h.tree_hash(root)
      local plan, err = v.plan({ root = root, ids = "1af4:1000", cmdline = true })
      assert.is_nil(plan, c[1])
      assert.matches(c[2], err)
      assert.is_nil(err:find("\n"), err)
      local code, _, cerr = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 --cmdline apply")
      assert.are.equal(1, code, cerr)
      assert.are.equal(before, h.tree_hash(root), c[1])
      h.rm(root)
    end
  end)

  it("--cmdline on the command line: plan shows the drop-in and exits 2", function()
    local root = grub_root('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    finally(function() h.rm(root) end)
    local code, out, err = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 --cmdline plan")
    assert.are.equal(2, code, err)
    assert.matches("+++ etc/default/grub.d/vfioinit.cfg", out, 1, true)
    assert.matches("vfio-pci.ids=1af4:1000", out, 1, true)
  end)

  it("says so when the root has no boot loader configuration it knows", function()
    local root = h.make_root({ os = { ID = "debian" }, files = { ["/etc/initramfs-tools/modules"] = "" },
      exec = { "/usr/sbin/update-initramfs" } })
    finally(function() h.rm(root) end)
    h.install_kernel(root, "cloud")
    local plan, err = v.plan({ root = root, ids = "1af4:1000", cmdline = true })
    assert.is_nil(plan)
    assert.matches("--cmdline: no boot loader configuration found", err, 1, true)
  end)
end)

-- The last word naming parameter `name` (the one the kernel acts on), or nil.
local function last_named(list, name)
  local all = named(list, name)
  return all[#all]
end

-- Every shape of /etc/default/grub, with both grub-mkconfigs: the shell's own reading (bash)
-- after apply has the parameters and every word the user had; what vfioinit cannot see
-- through is refused by PATH:LINE, nothing written; no input makes a run hang.
describe("--cmdline with GRUB: every shape of /etc/default/grub", function()
  local MKCONFIGS = { debian = DEBIAN_MKCONFIG, upstream = UPSTREAM_MKCONFIG }

  -- apply through the CLI under a timeout (a hang is a failure, not a stuck suite); then the
  -- words bash reads carry the parameters, and every word the user had is still there
  -- (the parameters' own words may have been merged into).
  local function applied(root, ids)
    local before = grub_words(root)
    local code, out, err = h.cli("--root " .. h.q(root) .. " --ids " .. ids .. " --cmdline --no-rebuild apply", "timeout 60")
    assert.are.equal(0, code, out .. err)
    local after = grub_words(root)
    assert.is_true(value_set(last_named(after, "intel_iommu") or "")["on"], table.concat(after, " "))
    assert.are.equal("iommu=pt", last_named(after, "iommu"))
    for id in ids:gmatch("[^,]+") do assert.is_true(value_set(last_named(after, "vfio_pci.ids"))[id], id) end
    for _, w in ipairs(before) do
      local key = w:match("^[^=]*"):gsub("-", "_")
      if key ~= "intel_iommu" and key ~= "iommu" and key ~= "vfio_pci.ids" then
        assert.are.equal(#named(before, key), #named(after, key), w)
      end
    end
    assert.are.equal(0, #assert(v.plan({ root = root, ids = ids, cmdline = true })).changes)
    return after
  end

  it("refuses export, readonly, declare, eval, a sourced file and assignments inside if, by PATH:LINE", function()
    local cases = {
      { 'GRUB_TIMEOUT=5\nexport GRUB_CMDLINE_LINUX_DEFAULT="root=/dev/sda2 cryptdevice=UUID=1:root intel_iommu=off"\n', 2 },
      { 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nexport GRUB_CMDLINE_LINUX_DEFAULT\n', 2 },
      { 'readonly GRUB_CMDLINE_LINUX="root=/dev/sda2"\n', 1 },
      { 'declare GRUB_CMDLINE_LINUX_DEFAULT="intel_iommu=off"\n', 1 },
      { "GRUB_TIMEOUT=5\neval 'GRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=off\"'\n", 2 },
      { "GRUB_TIMEOUT=5\n. /etc/default/grub.local\n", 2,
        { ["/etc/default/grub.local"] = 'GRUB_CMDLINE_LINUX="root=/dev/sda2 intel_iommu=off"\n' } },
      { 'if [ -d /sys/firmware/efi ]; then\n  GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nfi\n', 2 },
    }
    for name, mk in pairs(MKCONFIGS) do
      for _, c in ipairs(cases) do
        local root = grub_root(c[1], mk, c[3])
        local before = h.tree_hash(root)
        local plan, err = v.plan({ root = root, ids = "1af4:1000", cmdline = true })
        assert.is_nil(plan, name .. ": " .. c[1])
        assert.matches("^/etc/default/grub:" .. c[2] .. ": .*GRUB_CMDLINE_LINUX", err)
        local code, _, cerr = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 --cmdline apply", "timeout 60")
        assert.are.equal(1, code, cerr)
        assert.are.equal(before, h.tree_hash(root), c[1])
        h.rm(root)
      end
    end
  end)

  it("edits plain assignments next to statements that set other variables", function()
    local text = 'export GRUB_TIMEOUT=5\nreadonly GRUB_DISABLE_OS_PROBER=true\nGRUB_CMDLINE_LINUX="root=/dev/sda2"\n'
      .. 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    for _, mk in pairs(MKCONFIGS) do
      local root = grub_root(text, mk)
      applied(root, "1af4:1000")
      h.rm(root)
    end
  end)

  it("merges into values built from the other variable, and never loops", function()
    local cases = {
      'GRUB_CMDLINE_LINUX_DEFAULT="quiet vfio-pci.ids=10de:1b81"\nGRUB_CMDLINE_LINUX="root=/dev/sda2 vfio-pci.ids=10de:1b80"\n'
        .. 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX splash"\n',
      'GRUB_CMDLINE_LINUX="vfio_pci.ids=10de:1b80"\nGRUB_CMDLINE_LINUX_DEFAULT="vfio-pci.ids=10de:1b81 $GRUB_CMDLINE_LINUX"\n',
      'GRUB_CMDLINE_LINUX="root=/dev/sda2 intel_iommu=sm_on"\nGRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX} quiet"\n',
      'GRUB_CMDLINE_LINUX="iommu=pt"\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT $GRUB_CMDLINE_LINUX"\n'
        .. 'GRUB_CMDLINE_LINUX_DEFAULT+=" quiet"\n',
    }
    for _, mk in pairs(MKCONFIGS) do
      for _, text in ipairs(cases) do
        local root = grub_root(text, mk)
        applied(root, "1af4:1000")
        h.rm(root)
      end
    end
  end)

  it("reads CRLF line ends as sh does and keeps them", function()
    for _, text in ipairs({ 'GRUB_TIMEOUT=5\r\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\r\nGRUB_CMDLINE_LINUX=root=/dev/sda2\r\n',
      "GRUB_TIMEOUT=5\r\nGRUB_CMDLINE_LINUX_DEFAULT=quiet\r\n", "GRUB_TIMEOUT=5\r\n" }) do
      for _, mk in pairs(MKCONFIGS) do
        local root = grub_root(text, mk)
        applied(root, "1af4:1000")
        local new = h.readfile(root .. "/etc/default/grub")
        assert.is_nil(new:find("[^\r]\n"), new)
        assert.is_nil(new:find("\r[^\n]"), new)
        h.rm(root)
      end
    end
  end)
end)

-- How often `word` is in list; the words a target's boot entry gives, read by the shell: a BLS entry's `options`, or the
-- first `linux` line of a grub.cfg (its path dropped).
local function count(list, word)
  local n = 0
  for _, w in ipairs(list) do if w == word then n = n + 1 end end
  return n
end

local function target_words(root, path)
  local awk = path:match("%.conf$") and "$1==\"options\"{for(i=2;i<=NF;i++) print $i; exit}"
    or "$1==\"linux\"{for(i=3;i<=NF;i++) print $i; exit}"
  local t = {}
  for w in h.sh("awk " .. h.q(awk) .. " " .. h.q(root .. path)):gmatch("%S+") do t[#t + 1] = w end
  assert(#t > 0, path)
  return t
end

local function words_of(text)
  local t = {}
  for w in (text or ""):gmatch("%S+") do t[#t + 1] = w end
  return t
end

describe("--cmdline with /etc/kernel/cmdline", function()
  local function kroot(files)
    files["/etc/initramfs-tools/modules"] = ""
    local root = h.make_root({ os = { ID = "debian" }, files = files, exec = { "/usr/sbin/update-initramfs" } })
    return root, h.install_kernel(root, "cloud")
  end

  it("merges into the file in place, keeping the user's words and order", function()
    local root = kroot({ ["/etc/kernel/cmdline"] = "root=/dev/vda1 ro vfio-pci.ids=10de:1b80 quiet\n" })
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local text = h.readfile(root .. "/etc/kernel/cmdline")
    assert.are.equal(1, select(2, text:gsub("\n", "")))
    local w = words_of(text)
    assert_params(w, { "1af4:1000", "10de:1b80" })
    assert.are.same({ "root=/dev/vda1", "ro" }, { w[1], w[2] })
    assert.are.equal("quiet", w[4])
    -- revert restores it byte for byte
    assert.is_true((v.revert({ root = root })))
    assert.are.equal("root=/dev/vda1 ro vfio-pci.ids=10de:1b80 quiet\n", h.readfile(root .. "/etc/kernel/cmdline"))
  end)

  it("reads a CRLF file's CR as the kernel does (a blank) and keeps its line ends", function()
    local text = "# mine\r\nroot=/dev/vda1 rw\r\n"
    local root = kroot({ ["/etc/kernel/cmdline"] = text })
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local new = h.readfile(root .. "/etc/kernel/cmdline")
    local w = words_of(new:gsub("^#[^\n]*\n", ""))
    assert_params(w, { "1af4:1000" })
    assert.are.same({ "root=/dev/vda1", "rw" }, { w[1], w[2] })
    assert.are.equal(2, select(2, new:gsub("\r\n", "")))
    assert.is_nil(new:find("[^\r]\n") or new:find("\r[^\n]"), new)
    -- the same apply again has nothing to do
    assert.are.equal(0, #assert(v.plan({ root = root, ids = "1af4:1000", cmdline = true })).changes)
  end)

  -- a root other than `/` is another machine: the start is what it boots, never this
  -- machine's /proc/cmdline (nothing outside the root is read)
  it("creates it from the target's own grub.cfg entry when kernel-install builds UKIs and it is absent", function()
    local root, kver = kroot({ ["/etc/kernel/install.conf"] = "layout=uki\n" })
    finally(function() h.rm(root) end)
    h.writefile(root .. "/boot/grub/grub.cfg", ("menuentry 'Debian GNU/Linux' {\n\tlinux\t/boot/vmlinuz-%s "
      .. "root=UUID=0a1b ro console=ttyS1 quiet -- init-arg\n\tinitrd\t/boot/initrd.img-%s\n}\n"
      .. "menuentry 'Debian GNU/Linux (recovery mode)' {\n\tlinux\t/boot/vmlinuz-%s root=UUID=0a1b ro single\n}\n")
      :format(kver, kver, kver))
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local w = words_of(h.readfile(root .. "/etc/kernel/cmdline"))
    assert_params(w, { "1af4:1000" })
    local entry = target_words(root, "/boot/grub/grub.cfg")
    for _, x in ipairs(entry) do assert.are.equal(count(entry, x), count(w, x), x) end
    assert.are.equal(#entry + 3, #w, table.concat(w, " "))
    -- the parameters are the kernel's: before the `--` (what follows it is init's)
    assert.are.same({ "--", "init-arg" }, { w[#w - 1], w[#w] })
    assert.is_true((v.revert({ root = root })))
    assert.is_nil(h.readfile(root .. "/etc/kernel/cmdline"))
  end)

  it("refuses to guess when the target's boot entries give no command line, or two, naming the file to create", function()
    local root, kver = kroot({ ["/etc/kernel/install.conf"] = "layout=bls\n" })
    finally(function() h.rm(root) end)
    local function refused(pattern)
      local before = h.tree_hash(root)
      local plan, err = v.plan({ root = root, ids = "1af4:1000", cmdline = true })
      assert.is_nil(plan)
      assert.matches("^/etc/kernel/cmdline: absent, .*" .. pattern .. ".*create /etc/kernel/cmdline", err)
      local code, _, cerr = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 --cmdline apply")
      assert.are.equal(1, code, cerr)
      assert.are.equal(before, h.tree_hash(root))
    end
    refused("no boot entry")
    local entry = "title Debian\nversion %s\nlinux /vmlinuz-%s\noptions %s\n"
    h.writefile(root .. "/boot/loader/entries/a.conf", entry:format(kver, kver, "root=/dev/vda1 rw"))
    h.writefile(root .. "/boot/loader/entries/b.conf", entry:format(kver, kver, "root=/dev/vda2 ro"))
    refused("/boot/loader/entries/a.conf.*/boot/loader/entries/b.conf")
  end)
end)

describe("--cmdline with mkinitcpio UKIs (/etc/cmdline.d)", function()
  local PRESET = 'ALL_kver="/boot/vmlinuz-linux"\nPRESETS=(\'default\')\ndefault_uki="/efi/EFI/Linux/arch-linux.efi"\n'
  local function uroot(files)
    files["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev modconf)\n"
    files["/etc/mkinitcpio.d/linux.preset"] = files["/etc/mkinitcpio.d/linux.preset"] or PRESET
    local root = h.make_root({ os = { ID = "arch" }, files = files, exec = { "/usr/bin/mkinitcpio" } })
    return root, h.install_kernel(root, "cloud")
  end

  -- mkinitcpio v41's own expression over its sources, in its order.
  local function embedded(root)
    local script = ("cd %s && f=; for c in etc/kernel/cmdline usr/lib/kernel/cmdline; do [ -f $c ] && { f=$c; break; }; done; "
      .. "d=$(find etc/cmdline.d -xtype f -name '*.conf' 2>/dev/null | LC_ALL=C.UTF-8 sort -V); "
      .. "grep -ha -- '^[^#]' $f $d | tr -s '\\n' ' '"):format(h.q(root))
    return words_of((h.sh("bash -c " .. h.q(script))))
  end

  it("adds /etc/cmdline.d/vfioinit.conf next to the other sources", function()
    local root = uroot({ ["/etc/cmdline.d/10-root.conf"] = "# root\nroot=/dev/vda2 rw\n" })
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local w = embedded(root)
    assert_params(w, { "1af4:1000" })
    assert.are.same({ "root=/dev/vda2" }, named(w, "root"))
    assert.are.equal("# root\nroot=/dev/vda2 rw\n", h.readfile(root .. "/etc/cmdline.d/10-root.conf"))
  end)

  it("starts from the target's BLS entry when mkinitcpio has no source (it would reuse /proc/cmdline)", function()
    local root, kver = uroot({})
    finally(function() h.rm(root) end)
    local path = "/boot/loader/entries/arch.conf"
    h.writefile(root .. path, ("title Arch Linux\nversion %s\nlinux /vmlinuz-%s\noptions root=PARTUUID=9f2e rw "
      .. "loglevel=3\n"):format(kver, kver))
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local w = embedded(root)
    assert_params(w, { "1af4:1000" })
    local entry = target_words(root, path)
    for _, x in ipairs(entry) do assert.are.equal(1, count(w, x), x) end
    assert.are.equal(#entry + 3, #w, table.concat(w, " "))
  end)

  it("refuses a preset that sets the UKI's command line itself", function()
    local root = uroot({ ["/etc/mkinitcpio.d/linux.preset"] = PRESET .. 'default_cmdline="/etc/my-cmdline"\n' })
    finally(function() h.rm(root) end)
    local before = h.tree_hash(root)
    local plan, err = v.plan({ root = root, ids = "1af4:1000", cmdline = true })
    assert.is_nil(plan)
    assert.matches("^/etc/mkinitcpio.d/linux.preset:4: sets the UKI's command line itself", err)
    assert.are.equal(before, h.tree_hash(root))
  end)
end)

-- A root the specs chroot into: a static busybox and the booster stand-in, made to carry
-- vfio_virqfd and the modprobe file too (the ids need it).
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

-- A booster root run chrooted with busybox: the stand-in generator builds real images,
-- the stand-in grub-mkconfig writes grub.cfg from the config as 10_linux does.
describe("--cmdline: grub.cfg regenerated, read back per entry, regenerated on revert", function()
  local function chroot_root()
    local root = h.make_root({ os = { ID = "debian" }, files = { ["/etc/booster.yaml"] = "",
      ["/etc/default/grub"] = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n',
      ["/usr/sbin/update-grub"] = "#!/bin/sh\nexec grub-mkconfig -o /boot/grub/grub.cfg \"$@\"\n" } })
    local kver = h.install_kernel(root, "cloud")
    busybox_booster(root)
    h.sh("cp " .. h.q(STANDIN_GRUB) .. " " .. h.q(root .. "/usr/sbin/grub-mkconfig"))
    -- an installed kernel and the image booster built for it (grub.cfg's entry loads it)
    h.sh("chmod 755 " .. h.q(root .. "/usr/sbin/update-grub") .. " && touch " .. h.q(root .. "/boot/vmlinuz-" .. kver)
      .. " " .. h.q(root .. "/boot/booster-" .. kver .. ".img"))
    return root, kver
  end
  -- the `linux` lines of grub.cfg, by the shell
  local function linux_lines(root)
    local out = h.sh("grep -E '^[[:space:]]*linux[[:space:]]' " .. h.q(root .. "/boot/grub/grub.cfg"))
    local t = {}
    for l in out:gmatch("([^\n]*)\n") do t[#t + 1] = words_of(l) end
    return t
  end

  root_it("runs update-grub after apply, reports each entry's command line, and regenerates on revert", function()
    local root, kver = chroot_root()
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, timeout = 60 })
    assert.is_true(r.ok, r.error)
    assert.are.equal(1, #r.regenerated)
    assert.are.equal("update-grub", r.regenerated[1].command)
    local lines = linux_lines(root)
    assert.are.equal(2, #lines)
    assert_params(lines[1], { "1af4:1000" })
    assert.are.same({}, named(lines[2], "iommu"))  -- recovery: GRUB_CMDLINE_LINUX only
    local normal, recovery = 0, 0
    for _, e in ipairs(r.cmdline) do
      assert.are.equal(kver, e.kernel)
      assert.are.equal("/boot/grub/grub.cfg", e.source:match("^[^:]*"))
      if e.recovery then recovery = recovery + 1 else normal = normal + 1; assert.is_true(e.ok) end
    end
    assert.are.same({ 1, 1 }, { normal, recovery })
    -- nothing changed: no regeneration the second time
    r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, timeout = 60 })
    assert.is_true(r.ok, r.error)
    assert.is_nil(r.regenerated)
    assert.are.equal(1, select(2, h.readfile(root .. "/var/log/standin-grub.argv"):gsub("\n", "")))
    local ok, list = v.revert({ root = root })
    assert.is_true(ok, list)
    assert.are.equal(1, #list.regenerated)
    assert.is_nil(h.readfile(root .. "/etc/default/grub.d/vfioinit.cfg"))
    assert.are.same({}, named(linux_lines(root)[1], "intel_iommu"))
  end)

  -- docs/REFERENCE.md's own example: `single` after `--` is init's, so the entry stays a normal one
  root_it("reads `quiet -- single` as a normal entry whose words after `--` are init's", function()
    local root = chroot_root()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet -- single"\nGRUB_CMDLINE_LINUX=""\n')
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, timeout = 60 })
    assert.is_true(r.ok, r.error)
    local normal = linux_lines(root)[1]
    local dashes
    for i, x in ipairs(normal) do if x == "--" then dashes = i end end
    assert.are.same({ "--", "single" }, { normal[dashes], normal[dashes + 1] })
    assert_params({ table.unpack(normal, 1, dashes - 1) }, { "1af4:1000" })
    local normals = 0
    for _, e in ipairs(r.cmdline) do
      if not e.recovery then normals = normals + 1; assert.is_true(e.ok, e.entry) end
    end
    assert.are.equal(1, normals)
  end)

  root_it("regenerates a grub.cfg that lacks the parameters though the config has them", function()
    local root = chroot_root()
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, timeout = 60 })
    assert.is_true(r.ok, r.error)
    -- grub.cfg regenerated by someone without the drop-in (e.g. restored from a backup)
    local cfg = h.readfile(root .. "/boot/grub/grub.cfg")
    h.writefile(root .. "/boot/grub/grub.cfg", (cfg:gsub(" intel_iommu=on", "")))
    local st = v.status({ root = root, ids = "1af4:1000", cmdline = true })
    local bad = 0
    for _, e in ipairs(st.cmdline) do if not e.ok and not e.recovery then bad = bad + 1 end end
    assert.are.equal(1, bad)
    r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, timeout = 60 })
    assert.is_true(r.ok, r.error)
    assert.are.equal(1, #r.regenerated)
    assert_params(linux_lines(root)[1], { "1af4:1000" })
  end)
end)

-- Tools that edit the boot entries themselves: the plan records the operations in
-- /etc/vfioinit/<tool>.cmdline (its diff shows the command), apply runs the tool, revert runs
-- the inverse for exactly the recorded words.
describe("--cmdline with grubby and kernelstub", function()
  local ENTRY = "title Fedora Linux\nversion 6.1\nlinux /vmlinuz-6.1\ninitrd /initramfs-6.1.img\n"
    .. "options root=/dev/vda1 ro vfio_pci.ids=10de:1b80 rhgb\n"

  local function lines_of(text)
    local t = {}
    for l in (text or ""):gmatch("[^\n]+") do if not l:match("^#") then t[#t + 1] = l end end
    return t
  end

  it("grubby: records add/replace in the user's spelling and leaves /etc/default/grub to grubby", function()
    local root = h.make_root({ os = { ID = "fedora" }, files = { ["/etc/dracut.conf"] = "",
      ["/etc/default/grub"] = 'GRUB_CMDLINE_LINUX="rhgb"\n', ["/boot/loader/entries/f.conf"] = ENTRY },
      exec = { "/usr/bin/dracut", "/usr/sbin/grubby", "/usr/sbin/grub2-mkconfig" } })
    finally(function() h.rm(root) end)
    h.install_kernel(root, "cloud")
    local plan = assert(v.plan({ root = root, ids = "1af4:1000", cmdline = true }))
    local rec
    for _, c in ipairs(plan.changes) do
      assert.is_nil(c.path:match("grub$"), c.path)
      if c.path == "/etc/vfioinit/grubby.cmdline" then rec = c.after end
    end
    assert.are.same({ "replace vfio_pci.ids=10de:1b80 vfio_pci.ids=10de:1b80,1af4:1000", "add intel_iommu=on", "add iommu=pt" },
      lines_of(rec))
    assert.matches("# runs: grubby --update-kernel=ALL --args=vfio_pci.ids=10de:1b80,1af4:1000 intel_iommu=on iommu=pt",
      rec, 1, true)
  end)

  it("kernelstub: deletes the old word and adds the merged one", function()
    local root = h.make_root({ os = { ID = "pop", ID_LIKE = "ubuntu debian" }, files = {
      ["/etc/initramfs-tools/modules"] = "", ["/boot/efi/loader/entries/Pop_OS-current.conf"] = ENTRY },
      exec = { "/usr/sbin/update-initramfs", "/usr/bin/kernelstub" } })
    finally(function() h.rm(root) end)
    h.install_kernel(root, "cloud")
    local plan = assert(v.plan({ root = root, ids = "1af4:1000", cmdline = true }))
    local rec
    for _, c in ipairs(plan.changes) do if c.path == "/etc/vfioinit/kernelstub.cmdline" then rec = c.after end end
    assert.matches("# runs: kernelstub -d vfio_pci.ids=10de:1b80\n", rec, 1, true)
    assert.matches("# runs: kernelstub -a vfio_pci.ids=10de:1b80,1af4:1000 intel_iommu=on iommu=pt\n", rec, 1, true)
  end)

  root_it("grubby (stand-in, chrooted): apply updates every BLS entry, revert puts back exactly what was there", function()
    local root = h.make_root({ os = { ID = "fedora" }, files = { ["/etc/booster.yaml"] = "",
      ["/boot/loader/entries/a.conf"] = ENTRY } })
    finally(function() h.rm(root) end)
    local kver = h.install_kernel(root, "cloud")
    -- the entry loads the image booster builds (the active generator's, what verify reads)
    local entry = ENTRY:gsub("/initramfs%-6%.1%.img", "/booster-6.1.img"):gsub("6%.1", kver)
    h.writefile(root .. "/boot/loader/entries/a.conf", entry)
    busybox_booster(root)
    h.sh("cp " .. h.q(h.project .. "/spec/fixtures/standin-grubby") .. " " .. h.q(root .. "/usr/sbin/grubby"))
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, timeout = 60 })
    assert.is_true(r.ok, r.error)
    local opts = h.sh("sed -n 's/^options //p' " .. h.q(root .. "/boot/loader/entries/a.conf"))
    assert_params(words_of(opts), { "1af4:1000", "10de:1b80" })
    local bls_ok = 0
    for _, e in ipairs(r.cmdline) do if e.entry == "bls: a.conf" and e.ok then bls_ok = bls_ok + 1 end end
    assert.are.equal(1, bls_ok)
    assert.is_true((v.revert({ root = root })))
    -- the same words (grubby-bls appends a parameter it replaces, so the order may differ)
    local after = h.readfile(root .. "/boot/loader/entries/a.conf")
    local function sorted_options(t)
      local w = words_of(t:match("\noptions ([^\n]*)"))
      table.sort(w)
      return w
    end
    assert.are.same(sorted_options(entry), sorted_options(after))
    assert.are.equal(entry:gsub("\noptions [^\n]*", ""), (after:gsub("\noptions [^\n]*", "")))
    assert.is_nil(h.readfile(root .. "/etc/vfioinit/grubby.cmdline"))
  end)
end)
