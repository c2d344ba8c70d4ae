-- Proof through the firmware's own boot path (issue 15, 6a): the Arch-like root of
-- tools/mkroot mkinitcpio-uki (upstream mkinitcpio v41, preset `default_uki=`, Debian's
-- systemd-boot-efi stub) builds a unified kernel image; OVMF boots it from an ESP (a
-- directory served by QEMU's fat: driver, EFI/BOOT/BOOTX64.EFI), no -kernel/-append.
-- Control: the stock UKI leaves 1af4:1000 to virtio-pci. After `vfioinit --ids 1af4:1000
-- apply` (which must rebuild the UKI with `mkinitcpio -p`, not a side image) the same boot
-- binds vfio-pci, mkinitcpio's own lsinitcpio lists the VFIO modules inside the UKI, and
-- the .cmdline vfioinit reads back is the guest's /proc/cmdline.
-- Pending unless VFIOINIT_REAL=1 (tools/test sets it; VFIOINIT_QUICK=1 skips this file).
local h = require "helpers"
local u = require "uki_helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"
local VFIO_KO = h.VFIO_KO

local function sh_plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local function vfioinit(root, args)
  local out, _, code = h.sh(BIN .. " --root " .. h.q(root) .. " " .. args .. " 2>&1")
  return code, out
end

local function json(text, expr)
  local f = os.tmpname()
  h.writefile(f, text)
  local out = h.sh("python3 -c " .. h.q("import json,sys\nd=json.load(open(sys.argv[1]))\nprint(" .. expr .. ")") .. " " .. h.q(f))
  os.remove(f)
  return (out:gsub("\n$", ""))
end

-- lsinitcpio of the root itself (it unpacks a UKI's .initrd with objcopy): the generator's
-- own lister, independent of vfioinit's PE and cpio readers.
local function lsinitcpio(root, path)
  local out, ok = sh_plain(("bash -c %s 2>&1"):format(h.q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s lsinitcpio %s")
    :format(h.q(root), h.q(path)))))
  assert(ok, "lsinitcpio failed:\n" .. out)
  return out
end

local boot = u.boot  -- through OVMF, Secure Boot off

describe("proof through OVMF: a mkinitcpio v41 unified kernel image", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (tools/mkroot mkinitcpio-uki, OVMF boots in QEMU)")
    return
  end

  it("control UKI binds virtio-pci; after `apply --ids 1af4:1000` the rebuilt UKI binds vfio-pci and its .cmdline is the guest's", function()
    local root, kver, dir, cleanup = h.clone_real("mkinitcpio-uki")
    finally(cleanup)
    local uki = "/efi/EFI/Linux/arch-" .. kver .. ".efi"

    -- status/verify name the UKI, not /boot/initramfs-KVER.img (which the preset no longer builds)
    local code, text = vfioinit(root, "--json verify")
    assert.are.equal(2, code, text)
    assert.are.equal(uki .. " uki", json(text, "d['images'][0]['image'], d['images'][0]['kind']"))
    local stock_cmdline = json(text, "d['images'][0]['cmdline']")
    assert.are.equal(h.readfile(root .. "/etc/kernel/cmdline"):gsub("%s+$", ""), stock_cmdline)
    assert.are.equal("", h.vfio_listed(lsinitcpio(root, uki), kver))
    local guest, t_control = boot(dir, root .. uki, "virtio-pci")
    assert.are.equal(stock_cmdline, guest)

    local before = h.sh("sha256sum " .. h.q(root .. uki))
    code, text = vfioinit(root, "--ids 1af4:1000 apply")
    assert.are.equal(0, code, text)
    assert.truthy(text:find("rebuilt " .. uki .. " for " .. kver, 1, true), text)
    assert.truthy(text:find("verified " .. uki, 1, true), text)
    assert.are_not.equal(before, h.sh("sha256sum " .. h.q(root .. uki)))
    assert.is_nil(io.open(root .. "/boot/initramfs-" .. kver .. ".img"), "a side image was built")
    assert.is_nil(io.open(root .. uki .. ".vfioinit-prev"), "the previous UKI was left behind")
    local listing = lsinitcpio(root, uki)
    assert.are.equal(table.concat(VFIO_KO, " "), h.vfio_listed(listing, kver))
    assert.truthy(listing:find("etc/modprobe.d/vfioinit.conf", 1, true), listing)

    code, text = vfioinit(root, "--ids 1af4:1000 --json verify")
    assert.are.equal(0, code, text)
    local cmdline = json(text, "d['images'][0]['cmdline']")
    local guest2, t_vfio = boot(dir, root .. uki, "vfio-pci")
    assert.are.equal(cmdline, guest2)
    io.stderr:write(("[96-uki] OVMF boots: control %.1f s, after apply %.1f s\n"):format(t_control or -1, t_vfio or -1))
  end)

  -- 6c: bookworm's dracut 059 builds UKIs with `uefi=yes` and the systemd-boot-efi stub.
  it("dracut --uefi: `apply --ids 1af4:1000` rebuilds dracut's UKI at its own output path, which boots to vfio-pci", function()
    local root, kver, dir, cleanup = h.clone_real("dracut-uki")
    finally(cleanup)
    -- the path dracut chose by itself when tools/mkroot built the root (no output given)
    local uki = "/boot/efi/EFI/Linux/linux-" .. kver .. "-Default.efi"
    local before = h.sh("sha256sum " .. h.q(root .. uki))
    local code, text = vfioinit(root, "--ids 1af4:1000 apply")
    assert.are.equal(0, code, text)
    assert.truthy(text:find("rebuilt " .. uki .. " for " .. kver, 1, true), text)
    assert.are_not.equal(before, h.sh("sha256sum " .. h.q(root .. uki)))
    assert.is_nil(io.open(root .. "/boot/initrd.img-" .. kver), "a side image was built")
    -- dracut's own lister on the .initrd objcopy extracts (dracut 059's lsinitrd reads no UKI)
    local out, ok = sh_plain(("objcopy -O binary --only-section=.initrd %s %s 2>&1 && bash -c %s 2>&1"):format(h.q(root .. uki),
      h.q(root .. "/tmp/initrd.img"), h.q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s lsinitrd /tmp/initrd.img"):format(h.q(root)))))
    assert(ok, out)
    assert.are.equal(table.concat(VFIO_KO, " "), h.vfio_listed(out, kver))
    assert.truthy(out:find("rd.driver.pre=vfio", 1, true) or out:find("etc/cmdline.d/20-force_drivers.conf", 1, true), out)
    code, text = vfioinit(root, "--ids 1af4:1000 --json verify")
    assert.are.equal(0, code, text)
    assert.are.equal(uki .. " uki", json(text, "d['images'][0]['image'], d['images'][0]['kind']"))
    local guest, t = boot(dir, root .. uki, "vfio-pci")
    assert.are.equal(json(text, "d['images'][0]['cmdline']"), guest)
    io.stderr:write(("[96-uki] dracut UKI OVMF boot after apply: %.1f s\n"):format(t or -1))
  end)

  -- issue 27: the trial UKI dracut builds, its .osrel replaced after the build, still boots
  it("dracut --uefi: the trial UKI of `apply --trial --ids 1af4:1000` boots to vfio-pci with the trial's command line", function()
    local root, _, dir, cleanup = h.clone_real("dracut-uki")
    finally(cleanup)
    local code, text = vfioinit(root, "--ids 1af4:1000 --json apply --trial")
    assert.are.equal(0, code, text)
    local image, line = json(text, "d['trial']['image']"), json(text, "d['trial']['cmdline']")
    local guest, t = boot(dir, root .. image, "vfio-pci")
    assert.are.equal(line, guest)
    io.stderr:write(("[96-uki] dracut trial UKI OVMF boot: %.1f s\n"):format(t or -1))
  end)
end)
