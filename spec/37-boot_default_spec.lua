-- What the machine boots by default is what is verified: each loader's default entry
-- (GRUB's `default` as grub-core/normal/menu.c reads it, grubenv's saved_entry and
-- next_entry, systemd-boot's loader.conf), the command line that entry passes, the
-- modprobe.d the image carries, and Arch's kernel names. A root with booster active and a
-- real kernel; booster is a stand-in writing a real newc image (the kernel's VFIO modules and
-- root's /etc/modprobe.d, as a generator copies them).
local h = require "helpers"
local vfioinit = require "vfioinit"
-- update_initramfs' report whether it failed or not (nil, message, report on failure)
local function update(o)
  local rep, _, partial = vfioinit.update_initramfs(o)
  return rep or partial
end
local core = require "vfioinit.core"
local context = require "vfioinit.context"
local state = require "vfioinit.state"

local KVER = "6.1.0-57-cloud-amd64"
local OWN = "/boot/booster-" .. KVER .. ".img"

local root, real_spawn, restore_start

local function stub_spawn(o)
  h.booster_image(root, o.argv[5], o.argv[6], true)
  return { status = 0, timed_out = false, seconds = 0.01 }
end

-- A newc image without any VFIO module: what a hand-made initramfs may be.
local function plain_image(path)
  local d = h.tmpdir()
  h.writefile(d .. "/init", "#!/bin/sh\n")
  local out, ok = h.sh(("mkdir -p %s && cd %s && find . | cpio -o -H newc --quiet > %s"):format(
    h.q(root .. path:match("^(.*)/")), h.q(d), h.q(root .. path)))
  assert(ok, out)
  h.rm(d)
end

local function entry(title, id, initrd, args)
  return ("menuentry '%s' --class arch $menuentry_id_option '%s' {\n\tlinux /boot/vmlinuz-%s root=/dev/vda1 rw%s\n"
    .. "\tinitrd %s\n}\n"):format(title, id, KVER, args and (" " .. args) or "", initrd)
end

-- grub.cfg as grub-mkconfig's 00_header writes the default (next_entry first), then entries.
local function grub_cfg(default, entries)
  return "if [ -s $prefix/grubenv ]; then\n  set have_grubenv=true\n  load_env\nfi\n"
    .. 'if [ "${next_entry}" ] ; then\n   set default="${next_entry}"\n   set next_entry=\n   save_env next_entry\n'
    .. "   set boot_once=true\nelse\n   set default=" .. default .. "\nfi\n" .. table.concat(entries)
end

local TWO = { entry("Arch Linux", "arch", OWN), entry("Arch Linux (custom initramfs)", "custom", "/boot/custom.img") }

-- grubenv as grub-editenv writes it: a header, name=value lines, `#` padding to 1024 bytes.
local function grubenv(vars)
  local t = "# GRUB Environment Block\n" .. table.concat(vars)
  return t .. ("#"):rep(1024 - #t)
end

before_each(function()
  root = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "" } })
  h.writefile(root .. "/usr/bin/booster", "\127ELF stand-in\n", 493)
  assert.are.equal(KVER, (h.install_kernel(root, "cloud", KVER)))
  real_spawn = core.spawn.run
  core.spawn.run = stub_spawn
  restore_start = h.start_via_run(core)
  plain_image("/boot/custom.img")
end)
after_each(function()
  core.spawn.run = real_spawn
  restore_start()
  h.rm(root)
end)

describe("GRUB's default entry is the one verified", function()
  it("apply and verify fail when `set default` picks an entry whose initrd lacks VFIO, naming it", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', TWO))
    local rep = update({ root = root })
    assert.is_true(rep.ok, rep.error)   -- entry 0 loads the image booster builds
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"1"', TWO))
    rep = update({ root = root })
    assert.is_false(rep.ok)
    assert.truthy(rep.error:find("grub: Arch Linux (custom initramfs) boots /boot/custom.img", 1, true), rep.error)
    local code, out = h.cli("--root " .. h.q(root) .. " verify")
    assert.are.equal(2, code)
    assert.truthy(out:find("FAIL /boot/custom.img (booster, " .. KVER .. ", booted by grub: Arch Linux (custom initramfs)", 1, true), out)
    -- status marks the same entry the default
    code, out = h.cli("--root " .. h.q(root) .. " status")
    assert.are.equal(0, code)
    assert.truthy(out:find("grub: Arch Linux (custom initramfs) [default]", 1, true), out)
    assert.truthy(out:find("image: /boot/custom.img (booster, " .. KVER .. ", booted by grub: Arch Linux (custom initramfs)): lacks", 1, true), out)
  end)

  it("reads the default as GRUB does: id, title, saved_entry and next_entry from grubenv", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', TWO))
    assert.is_true(update({ root = root }).ok)
    local function verdict(default, env)
      h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg(default, TWO))
      if env then h.writefile(root .. "/boot/grub/grubenv", grubenv(env)) else os.remove(root .. "/boot/grub/grubenv") end
      local r = assert(vfioinit.verify({ root = root }))[1]
      return r.ok, r.image
    end
    for _, d in ipairs({ '"custom"', "'Arch Linux (custom initramfs)'", '"0x1"', '"1>0"' }) do
      assert.are.same({ false, "/boot/custom.img" }, { verdict(d) }, d)
    end
    -- past the last entry, or a name nothing has: GRUB starts entry 0
    for _, d in ipairs({ '"7"', '"nosuch"' }) do assert.are.same({ true, OWN }, { verdict(d) }, d) end
    -- GRUB_DEFAULT=saved: grubenv's saved_entry; none saved is entry 0
    assert.are.same({ false, "/boot/custom.img" }, { verdict('"${saved_entry}"', { "saved_entry=custom\n" }) })
    assert.are.same({ true, OWN }, { verdict('"${saved_entry}"') })
    -- grub-reboot: the next boot starts next_entry once, then the default again: both are checked
    assert.are.same({ false, "/boot/custom.img" }, { verdict('"0"', { "next_entry=1\n" }) })
    assert.are.same({ false, "/boot/custom.img" }, { verdict('"1"', { "next_entry=0\n" }) })
    assert.are.same({ true, OWN }, { verdict('"0"', { "next_entry=\n" }) })
  end)

  it("a kernel no loader starts by default keeps the old rule: an entry that loads the generator's image", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', { entry("Other", "other", "/boot/x.img"):gsub(KVER:gsub("%p", "%%%0"), "9.9.9"),
      TWO[2], TWO[1] }))
    local rep = update({ root = root })
    assert.is_true(rep.ok, rep.error)
    local r = assert(vfioinit.verify({ root = root }))[1]
    assert.is_true(r.ok)
    assert.are.equal(OWN, r.image)
  end)
end)

describe("several loaders with a default entry", function()
  it("checks GRUB's and systemd-boot's default entries each, and says so", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', TWO))
    assert.is_true(update({ root = root }).ok)
    h.writefile(root .. "/boot/loader/loader.conf", "timeout 3\ndefault custom.conf\n")
    h.writefile(root .. "/boot/loader/entries/custom.conf", "title Custom\nlinux /vmlinuz-" .. KVER
      .. "\ninitrd /custom.img\noptions root=/dev/vda1 rw\n")
    local r = assert(vfioinit.verify({ root = root }))[1]
    assert.is_false(r.ok)
    assert.are.equal("/boot/custom.img", r.image)
    assert.are.equal("bls: custom.conf", r.chain)
    assert.are.equal(2, #r.checked)
    assert.truthy(r.note:find("GRUB (/boot/grub/grub.cfg)", 1, true), r.note)
    assert.truthy(r.note:find("systemd-boot (/boot/loader/loader.conf)", 1, true), r.note)
    local code, _, err = h.cli("--root " .. h.q(root) .. " verify")
    assert.are.equal(2, code)
    assert.truthy(err:find("cannot be told from the root", 1, true), err)
    -- both defaults load the generator's image: ok
    h.writefile(root .. "/boot/loader/entries/custom.conf", "title Custom\nlinux /vmlinuz-" .. KVER
      .. "\ninitrd /booster-" .. KVER .. ".img\n")
    r = assert(vfioinit.verify({ root = root }))[1]
    assert.is_true(r.ok)
  end)
end)

-- Record in the manifest that the `cmdline` stage wrote a file (what apply --cmdline leaves).
local function record_cmdline(path, text)
  assert(state.journal(root, { { generator = "cmdline", path = path, after = text } }, true))
  h.writefile(root .. path, text)
  assert(state.finish(root))
end

describe("the command line the default entry passes", function()
  before_each(function()
    h.writefile(root .. "/usr/bin/grub-mkconfig", "#!/bin/sh\nexit 0\n", 493)
  end)

  it("verify --cmdline fails when the entry lacks the parameters (exit 2), passes when it has them", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', TWO))
    assert.is_true(update({ root = root }).ok)
    local code, out = h.cli("--root " .. h.q(root) .. " --cmdline verify")
    assert.are.equal(2, code, out)
    assert.truthy(out:find("FAIL /boot/grub/grub.cfg:%d+ %(cmdline, " .. KVER:gsub("%p", "%%%0") .. "%)"), out)
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', { entry("Arch Linux", "arch", OWN, "intel_iommu=on iommu=pt"),
      entry("Arch Linux (custom initramfs)", "custom", "/boot/custom.img", "intel_iommu=on iommu=pt") }))
    code, out = h.cli("--root " .. h.q(root) .. " --cmdline verify")
    assert.are.equal(0, code, out)
    -- --ids: vfio-pci.ids must be there too
    code, out = h.cli("--root " .. h.q(root) .. " --cmdline --ids 1af4:1000 verify")
    assert.are.equal(2, code, out)
    assert.truthy(out:find("lacks vfio-pci.ids", 1, true), out)
  end)

  it("a recovery entry GRUB starts by default is judged like any other", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"1"', { entry("Arch Linux", "arch", OWN, "intel_iommu=on iommu=pt"),
      entry("Arch Linux (recovery mode)", "rec", OWN, "single") }))
    assert.is_true(update({ root = root }).ok)
    local list = assert(vfioinit.verify({ root = root, cmdline = true }))
    local bad = {}
    for _, r in ipairs(list) do if not r.ok then bad[#bad + 1] = r.entry end end
    assert.are.same({ "grub: Arch Linux (recovery mode)" }, bad)
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', { entry("Arch Linux", "arch", OWN, "intel_iommu=on iommu=pt"),
      entry("Arch Linux (recovery mode)", "rec", OWN, "single") }))
    for _, r in ipairs(assert(vfioinit.verify({ root = root, cmdline = true }))) do assert.is_true(r.ok, r.entry) end
  end)

  it("without --cmdline, verify, status and apply check it when the manifest records vfioinit's parameters", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', TWO))
    assert.is_true(update({ root = root }).ok)
    local code = h.cli("--root " .. h.q(root) .. " verify")
    assert.are.equal(0, code)   -- nothing of vfioinit's on the command line: not checked
    record_cmdline("/etc/default/grub.d/vfioinit.cfg", 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT intel_iommu=on iommu=pt"\n')
    local out
    code, out = h.cli("--root " .. h.q(root) .. " verify")
    assert.are.equal(2, code, out)
    assert.truthy(out:find("(cmdline, " .. KVER .. "): lacks intel_iommu", 1, true), out)
    code, out = h.cli("--root " .. h.q(root) .. " status")
    assert.are.equal(0, code)
    assert.truthy(out:find("cmdline: grub: Arch Linux (" .. KVER .. ", /boot/grub/grub.cfg:", 1, true), out)
    local rep = update({ root = root })
    assert.is_false(rep.ok)
    assert.truthy(rep.error:find("the kernel command line lacks intel_iommu", 1, true), rep.error)
  end)
end)

describe("a later modprobe.d file in the image that sets other ids", function()
  it("fails verify --full, status and apply's verification, as apply --ids refuses it in root", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', TWO))
    assert.is_true(update({ root = root, ids = "1af4:1000" }).ok)
    -- the image gets a file sorting after vfioinit.conf (the kernel keeps the last ids=) ...
    h.writefile(root .. "/etc/modprobe.d/zz-gpu.conf", "options vfio-pci ids=10de:1b80\n")
    stub_spawn({ argv = { "booster", "build", "--force", "--kernel-version", KVER, OWN } })
    local listing = h.sh("cpio -it --quiet < " .. h.q(root .. OWN))
    assert.truthy(listing:find("etc/modprobe.d/zz-gpu.conf", 1, true))
    -- ... which apply --ids refuses in root, naming it
    local p, err = vfioinit.plan({ root = root, ids = "1af4:1000" })
    assert.is_nil(p)
    assert.truthy(err:find("^/etc/modprobe%.d/zz%-gpu%.conf:1: already sets vfio%-pci ids=10de:1b80"), err)
    -- a plain plan keeps vfioinit.conf's ids: the same conflict
    p, err = vfioinit.plan({ root = root })
    assert.is_nil(p)
    assert.truthy(err:find("^/etc/modprobe%.d/zz%-gpu%.conf:1:"), err)
    -- gone from root, still in the image
    os.remove(root .. "/etc/modprobe.d/zz-gpu.conf")
    local r = assert(vfioinit.verify({ root = root, full = true }))[1]
    assert.is_false(r.ok)
    assert.truthy(table.concat(r.missing, "\n"):find("/etc/modprobe.d/zz-gpu.conf:1: already sets vfio-pci ids=10de:1b80", 1, true),
      table.concat(r.missing, "\n"))
    local st = assert(vfioinit.status({ root = root }))
    assert.is_false(st.images[1].ok)
    -- a plain apply rebuilds it from root, and then it is right
    local rep = update({ root = root })
    assert.is_true(rep.ok, rep.error)
    assert.are.equal(1, #rep.rebuilt)
    assert.is_falsy(h.sh("cpio -it --quiet < " .. h.q(root .. OWN)):find("zz-gpu", 1, true))
  end)

  it("an earlier file setting other ids, or a blacklist of vfio-pci, in the image fails too", function()
    h.writefile(root .. "/boot/grub/grub.cfg", grub_cfg('"0"', TWO))
    assert.is_true(update({ root = root, ids = "1af4:1000" }).ok)
    for _, case in ipairs({ { "00-gpu.conf", "options vfio_pci ids=10de:1b80\n", "already sets" },
      { "gpu.conf", "blacklist vfio-pci\n", "blacklists vfio_pci" } }) do
      h.writefile(root .. "/etc/modprobe.d/" .. case[1], case[2])
      stub_spawn({ argv = { "booster", "build", "--force", "--kernel-version", KVER, OWN } })
      os.remove(root .. "/etc/modprobe.d/" .. case[1])
      local r = assert(vfioinit.verify({ root = root, full = true }))[1]
      assert.is_false(r.ok, case[1])
      assert.truthy(table.concat(r.missing):find("/etc/modprobe.d/" .. case[1] .. ":1: " .. case[3], 1, true), case[1])
    end
  end)
end)

describe("Arch names the kernel by its package", function()
  local ARCH = "menuentry 'Arch Linux' --class arch $menuentry_id_option 'gnulinux-simple-x' {\n"
    .. "\tlinux\t/boot/vmlinuz-linux root=UUID=x rw loglevel=3 quiet\n\tinitrd\t/boot/booster-linux.img\n}\n"
    .. "menuentry 'Arch Linux LTS' {\n\tlinux\t/boot/vmlinuz-linux-lts root=UUID=x rw\n\tinitrd\t/boot/booster-linux-lts.img\n}\n"

  before_each(function()
    h.writefile(root .. "/lib/modules/" .. KVER .. "/pkgbase", "linux\n")
    h.writefile(root .. "/boot/vmlinuz-linux", "kernel")
    h.writefile(root .. "/boot/grub/grub.cfg", 'set default="0"\n' .. ARCH)
    h.writefile(root .. "/usr/bin/grub-mkconfig", "#!/bin/sh\nexit 0\n", 493)
  end)

  it("grub.cfg's /boot/vmlinuz-<pkgbase> is the kernel's GRUB chain, status shows it", function()
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(1, #list)
    assert.are.equal("grub: Arch Linux", list[1].entry)
    assert.are.equal("/boot/booster-linux.img", list[1].initramfs)
    assert.is_true(list[1].default)
    local _, out = h.cli("--root " .. h.q(root) .. " status")
    assert.truthy(out:find("grub: Arch Linux [default] → " .. KVER .. " → /boot/vmlinuz-linux → /boot/booster-linux.img", 1, true), out)
  end)

  it("the command line is read back from that entry (no 'no grub.cfg entry boots kernel')", function()
    local ctx = context.new({ root = root })
    local wants = require("vfioinit.boot.cmdline.words").wants()
    local got = assert(require("vfioinit.boot.cmdline").readback_for(ctx, "grub", wants, KVER))
    assert.are.equal(1, #got)
    assert.are.equal("grub: Arch Linux", got[1].entry)
    assert.is_false(got[1].ok)
    h.writefile(root .. "/boot/loader/entries/arch.conf", "title Arch\nlinux /vmlinuz-linux\ninitrd /booster-linux.img\noptions rw\n")
    got = assert(require("vfioinit.boot.cmdline").readback_for(ctx, "kernel_cmdline", wants, KVER))
    assert.are.equal("bls: arch.conf", got[1].entry)
    -- verify --cmdline judges it: it lacks the parameters, not "no entry"
    local list = assert(vfioinit.verify({ root = root, cmdline = true, generators = { "booster" } }))
    local errs = {}
    for _, r in ipairs(list) do if r.generator == "cmdline" and not r.ok then errs[#errs + 1] = r.error or r.missing[1] end end
    assert.are.same({ "intel_iommu" }, errs)
  end)
end)
