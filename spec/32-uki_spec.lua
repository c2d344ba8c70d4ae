-- vfioinit.boot.uki (the .cmdline/.initrd of a unified kernel image), verify on a UKI, and
-- mkinitcpio's UKI presets: `<preset>_uki=` is what boots, rebuilt with `mkinitcpio -p`,
-- the previous UKI kept until the new one verifies. Real UKIs: the systemd stub with
-- sections added by objcopy as mkinitcpio v41 does (spec/uki_helpers.lua), initramfs
-- made by GNU cpio from the real Debian kernel's VFIO modules.
local h = require "helpers"
local u = require "uki_helpers"
local core = require "vfioinit.core"
local uki = require "vfioinit.boot.uki"
local image = require "vfioinit.image"
local mkinitcpio = require "vfioinit.generators.mkinitcpio"
local context = require "vfioinit.context"

local q, sh = h.q, h.sh
local uit = u.guard(it, pending)
local root_it = h.chroot_it(uit, pending)

local function names(entries)
  local t = {}
  for i, e in ipairs(entries) do t[i] = e.name end
  return t
end

local function cpio_names(file, comp)
  local t = {}
  for l in sh((comp == "zstd" and "zstd -dc " or "cat ") .. q(file) .. " | cpio -t --quiet"):gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

describe("vfioinit.boot.uki", function()
  local dir, root
  before_each(function() dir = h.tmpdir(); root = dir .. "/root"; sh("mkdir -p " .. q(root .. "/efi")) end)
  after_each(function() h.rm(dir) end)

  uit("reads .cmdline as the stub passes it (mkinitcpio's trailing newline and NUL dropped), .uname, .osrel, .initrd", function()
    local initrd = u.initramfs(dir, { ["etc/x"] = "x" })
    u.uki(dir, root .. "/efi/a.efi", { cmdline = "root=UUID=1 rw  quiet", initrd = initrd, uname = "6.1.0-57-cloud-amd64",
      osrel = "ID=arch\n" })
    local r = assert(uki.read(root, "/efi/a.efi"))
    assert.are.equal("root=UUID=1 rw  quiet", r.cmdline)
    assert.are.equal("6.1.0-57-cloud-amd64", r.uname)
    assert.are.equal("ID=arch", r.osrel)
    local od
    for _, s in ipairs(u.objdump(root .. "/efi/a.efi")) do if s.name == ".initrd" then od = s end end
    assert.are.same({ offset = od.offset, size = od.size }, r.initrd)
    -- a UKI without .cmdline (mkinitcpio --no-cmdline): no command line, not an error
    u.uki(dir, root .. "/efi/b.efi", { initrd = initrd })
    r = assert(uki.read(root, "/efi/b.efi"))
    assert.is_nil(r.cmdline)
  end)

  uit("lists the .initrd like an image, and image.list does so for any path that is a UKI", function()
    local initrd = u.initramfs(dir, { ["etc/modules-load.d/MODULES.conf"] = "vfio_pci\n", ["config"] = "MODULES=\"vfio\"\n" })
    u.uki(dir, root .. "/efi/a.efi", { cmdline = "quiet", initrd = initrd })
    local e1, c1, s1, info = image.list(root, "/efi/a.efi", { config = true })
    assert.are.same(cpio_names(initrd, "zstd"), names(e1))
    assert.are.equal('MODULES="vfio"\n', c1.config)
    assert.are.equal("zstd", s1[1].compression)
    assert.are.equal("quiet", info.cmdline)
    local e3, c3 = uki.list(root, "/efi/a.efi", { config = true })
    assert.are.same(e1, e3); assert.are.same(c1, c3)
    -- a plain image: as before, no UKI info
    sh(("cp %s %s"):format(q(initrd), q(root .. "/efi/plain.img")))
    local e2, _, _, info2 = image.list(root, "/efi/plain.img")
    assert.are.same(names(e1), names(e2))
    assert.is_nil(info2)
  end)

  uit("names the file at fault: a PE without .linux, a UKI without .initrd", function()
    sh(("cp %s %s"):format(q(u.STUB), q(root .. "/efi/stub.efi")))
    local v, err = uki.read(root, "/efi/stub.efi")
    assert.is_nil(v)
    assert.are.equal("/efi/stub.efi: a PE image without a .linux section (not a unified kernel image)", err)
    h.writefile(dir .. "/linux", ("\0"):rep(512))
    u.make(root .. "/efi/noinitrd.efi", { { ".linux", dir .. "/linux" } })
    v, err = uki.list(root, "/efi/noinitrd.efi")
    assert.is_nil(v)
    assert.are.equal("/efi/noinitrd.efi: the unified kernel image has no .initrd section", err)
    v, err = image.list(root, "/efi/noinitrd.efi")
    assert.is_nil(v); assert.truthy(err:find("no .initrd section", 1, true))
  end)
end)

---------------------------------------------------------------------------
-- An Arch-like root: mkinitcpio v41's stock preset switched to a UKI, the real kernel.

local PRESET = [[
# mkinitcpio preset file for the '%s' package

#ALL_config="/etc/mkinitcpio.conf"
ALL_kver="/boot/vmlinuz-%s"

PRESETS=('default')

#default_config="/etc/mkinitcpio.conf"
#default_image="/boot/initramfs-%s.img"
default_uki="/efi/EFI/Linux/arch-%s.efi"
#default_options="--splash /usr/share/systemd/bootctl/splash-arch.bmp"
]]

local function arch_root(exec)
  local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = exec or { "/usr/bin/mkinitcpio", "/usr/lib/kernel/install.d/50-mkinitcpio.install" } })
  local kver = h.install_kernel(r, "cloud")
  h.writefile(r .. "/boot/vmlinuz-" .. kver, "kernel image\n")
  h.writefile(r .. "/etc/mkinitcpio.d/" .. kver .. ".preset", PRESET:format(kver, kver, kver, kver))
  sh("mkdir -p " .. q(r .. "/efi/EFI/Linux"))
  return r, kver, "/efi/EFI/Linux/arch-" .. kver .. ".efi"
end

-- A UKI for kver whose .initrd carries the real kernel's VFIO modules (and `config`
-- naming them in MODULES) when `vfio`, else only an init.
local function kernel_uki(dir, kver, out, vfio)
  local files = { init = "#!/bin/sh\n" }
  if vfio then
    local kdir = h.real_kernel("cloud")
    local mods = {}
    local list = sh("cd " .. q(kdir) .. " && find lib/modules/" .. kver .. "/kernel/drivers/vfio -name '*.ko*'")
    for rel in list:gmatch("[^\n]+") do
      files["usr/" .. rel] = h.readfile(kdir .. "/" .. rel)
      mods[#mods + 1] = rel:match("([^/]+)%.ko"):gsub("-", "_")
    end
    files.config = 'MODULES="' .. table.concat(mods, " ") .. '"\n'
  end
  return u.uki(dir, out, { cmdline = "root=/dev/vda rw", initrd = u.initramfs(dir, files, "zstd", vfio and "vfio" or "plain") })
end

describe("mkinitcpio presets with <preset>_uki", function()
  local root, kver, UKI
  before_each(function() root, kver, UKI = arch_root() end)
  after_each(function() h.rm(root) end)

  it("boots the preset's UKI: uki_path, image_path and `mkinitcpio -p <preset>` (ALL_kver=/boot/vmlinuz-KVER)", function()
    local ctx = context.new({ root = root, kernels = { kver } })
    assert.are.equal(UKI, mkinitcpio.uki_path(ctx, kver))
    assert.are.equal(UKI, mkinitcpio.image_path(ctx, kver))
    assert.are.same({ { argv = { "mkinitcpio", "-p", kver }, kernels = { kver } } }, mkinitcpio.rebuild_argv(ctx, { kver }))
    -- the deprecated name mkinitcpio v41 still reads when _uki is unset
    h.writefile(root .. "/etc/mkinitcpio.d/" .. kver .. ".preset",
      ('ALL_kver="/boot/vmlinuz-%s"\nPRESETS=(default)\ndefault_image="/boot/i.img"\ndefault_efi_image="/efi/old.efi"\n'):format(kver))
    assert.are.equal("/efi/old.efi", mkinitcpio.uki_path(ctx, kver))
    -- no UKI: the image as before
    h.writefile(root .. "/etc/mkinitcpio.d/" .. kver .. ".preset",
      ('ALL_kver="/boot/vmlinuz-%s"\nPRESETS=(default)\ndefault_image="/boot/i.img"\n'):format(kver))
    assert.is_nil(mkinitcpio.uki_path(ctx, kver))
    assert.are.equal("/boot/i.img", mkinitcpio.image_path(ctx, kver))
  end)

  it("refuses a relative <preset>_uki, naming the preset file and line", function()
    local preset = "/etc/mkinitcpio.d/" .. kver .. ".preset"
    h.writefile(root .. preset, ('ALL_kver="/boot/vmlinuz-%s"\nPRESETS=(default)\ndefault_uki="efi/x.efi"\n'):format(kver))
    local code, out, err = h.cli("--root " .. q(root) .. " verify")
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find(preset .. ":3: default_uki must be an absolute path", 1, true), err)
  end)

  uit("verify reads the UKI: kind uki, its .initrd's modules and its .cmdline", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    kernel_uki(dir, kver, root .. UKI, false)
    local code, out = h.cli("--root " .. q(root) .. " --json verify")
    assert.are.equal(2, code, out)
    assert.are.equal(("%s uki root=/dev/vda rw False"):format(UKI), h.pyjson(out,
      "d['images'][0]['image'], d['images'][0]['kind'], d['images'][0]['cmdline'], d['images'][0]['ok']"):gsub("[(),']", ""))
    kernel_uki(dir, kver, root .. UKI, true)
    code, out = h.cli("--root " .. q(root) .. " verify")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("ok   " .. UKI, 1, true), out)
  end)

  uit("a leftover <UKI>.vfioinit-prev next to a good UKI is removed, not put back over it", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    kernel_uki(dir, kver, root .. UKI, true)
    local good = h.readfile(root .. UKI)
    h.writefile(root .. UKI .. ".vfioinit-prev", "an older UKI")
    local code, out, err = h.cli("--root " .. q(root) .. " --json apply --no-rebuild")
    assert.are.equal(0, code, out .. err)
    assert.are.equal("removed " .. UKI .. ".vfioinit-prev", h.pyjson(out, "d['leftovers'][0]['action'] + ' ' + d['leftovers'][0]['path']"))
    assert.are.equal(good, h.readfile(root .. UKI))
  end)
end)

describe("rebuilding a mkinitcpio UKI (a stand-in mkinitcpio in a busybox chroot)", function()
  local busybox = h.static_busybox()

  -- /usr/bin/mkinitcpio: logs its arguments and copies /new.efi to the preset's UKI.
  local function stand_in(root, uki_path)
    sh(("mkdir -p %s/bin && cp %s %s/bin/busybox && cd %s/bin && for a in sh cp echo; do ln -sf busybox $a; done")
      :format(q(root), q(busybox or "/bin/true"), q(root), q(root)))
    h.writefile(root .. "/usr/bin/mkinitcpio", ("#!/bin/sh\necho \"$@\" > /mkinitcpio.args\ncp /new.efi %s\n"):format(uki_path), 493)
  end

  root_it("keeps the previous UKI until the new one verifies: a new UKI without VFIO is replaced by the old one", function()
    local root, kver, UKI = arch_root({ "/usr/lib/kernel/install.d/50-mkinitcpio.install" })
    local dir = h.tmpdir()
    finally(function() h.rm(root); h.rm(dir) end)
    stand_in(root, UKI)
    kernel_uki(dir, kver, root .. UKI, true)
    local old = h.readfile(root .. UKI)
    kernel_uki(dir, kver, root .. "/new.efi", false)
    local code, out, err = h.cli("--root " .. q(root) .. " apply")
    assert.are.equal(1, code, out .. err)
    assert.are.equal("-p " .. kver .. "\n", h.readfile(root .. "/mkinitcpio.args"))
    assert.truthy((out .. err):find("previous image " .. UKI .. " restored", 1, true), out .. err)
    assert.are.equal(old, h.readfile(root .. UKI))
    assert.is_nil(core.fs.stat(root, UKI .. ".vfioinit-prev"))

    -- a new UKI that carries them replaces the old one, and the backup goes
    kernel_uki(dir, kver, root .. "/new.efi", true)
    sh(("printf 'x' >> %s"):format(q(root .. "/new.efi")))  -- differs from the old one by a byte
    code, out, err = h.cli("--root " .. q(root) .. " rebuild")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("rebuilt " .. UKI .. " for " .. kver, 1, true), out)
    assert.are.equal(h.readfile(root .. "/new.efi"), h.readfile(root .. UKI))
    assert.is_nil(core.fs.stat(root, UKI .. ".vfioinit-prev"))
  end)
end)

describe("dracut with uefi=yes", function()
  local dracut = require "vfioinit.generators.dracut"
  local root
  before_each(function()
    root = h.make_root({ os = { ID = "fedora", BUILD_ID = "39" }, corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" },
      exec = { "/usr/bin/dracut", "/usr/lib/kernel/install.d/50-dracut.install" },
      files = { ["/etc/machine-id"] = "0123456789abcdef0123456789abcdef\n" } })
  end)
  after_each(function() h.rm(root) end)

  local function ctx() return context.new({ root = root, kernels = { "6.1.0-test" }, distro = { id = "fedora" } }) end

  it("builds and verifies the UKI at dracut 059's own output path", function()
    assert.is_nil(dracut.uki_path(ctx(), "6.1.0-test"))
    h.writefile(root .. "/etc/dracut.conf.d/50-uki.conf", "uefi=yes\n")
    assert.are.equal("/boot/EFI/Linux/linux-6.1.0-test-0123456789abcdef0123456789abcdef-39.efi", dracut.uki_path(ctx(), "6.1.0-test"))
    sh("mkdir -p " .. q(root .. "/boot/efi/EFI"))
    local want = "/boot/efi/EFI/Linux/linux-6.1.0-test-0123456789abcdef0123456789abcdef-39.efi"
    assert.are.equal(want, dracut.image_path(ctx(), "6.1.0-test"))
    assert.are.same({ { argv = { "dracut", "--force", want, "6.1.0-test" }, kernels = { "6.1.0-test" } } },
      dracut.rebuild_argv(ctx(), { "6.1.0-test" }))
    sh("mkdir -p " .. q(root .. "/efi/EFI") .. " " .. q(root .. "/efi/Default"))
    assert.are.equal("/efi/EFI/Linux/linux-6.1.0-test-Default-39.efi", dracut.uki_path(ctx(), "6.1.0-test"))
    h.writefile(root .. "/etc/dracut.conf.d/60-id.conf", "machine_id=no\n")
    assert.are.equal("/efi/EFI/Linux/linux-6.1.0-test-39.efi", dracut.uki_path(ctx(), "6.1.0-test"))
    -- a later config turns it off again
    h.writefile(root .. "/etc/dracut.conf.d/90-no.conf", "uefi=no\n")
    assert.is_nil(dracut.uki_path(ctx(), "6.1.0-test"))
  end)

  it("names the config at fault when it cannot be read", function()
    h.writefile(root .. "/etc/dracut.conf.d/50-uki.conf", "uefi=\"yes\n")
    local v, err = dracut.uki_path(ctx(), "6.1.0-test")
    assert.is_nil(v)
    assert.truthy(err:find("^/etc/dracut.conf.d/50%-uki.conf:1: "), err)
  end)
end)
