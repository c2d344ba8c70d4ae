-- kernel-install builds what boots (issue 15, item 2 for kernel-install), on real roots
-- (tools/mkroot):
-- * kinstall-uki: bookworm-backports' systemd 254 kernel-install, dracut 106 as
--   uki_generator (its 50-dracut.install builds the UKI, 90-uki-copy.install puts it at
--   /boot/efi/EFI/Linux/debian-KVER.efi). Before apply the UKI lacks VFIO; `vfioinit
--   --cmdline --ids 1af4:1000 apply` rebuilds it with `kernel-install add` (not dracut's own
--   image, which nothing boots): dracut's lsinitrd lists the VFIO modules in its .initrd and
--   objcopy's .cmdline has the words; OVMF boots that UKI: control → virtio-pci, after →
--   vfio-pci. revert + rebuild: the UKI loses both.
-- * kinstall-bls: Debian 12's systemd 252 kernel-install (layout=bls), initramfs-tools.
--   apply runs update-initramfs, then `kernel-install add` copies the image into the entry
--   and rewrites its `options` from /etc/kernel/cmdline; systemd-boot (Debian's
--   systemd-boot-efi) under OVMF boots that entry to vfio-pci; revert rewrites the entry
--   without the words.
-- Pending unless VFIOINIT_REAL=1 (tools/test sets it; VFIOINIT_QUICK=1 skips this file).
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"
local VFIO_KO = h.VFIO_KO
local WORDS = { "intel_iommu=on", "iommu=pt", "vfio-pci.ids=1af4:1000" }

local function sh_plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local function vfioinit(root, args)
  local out, _, code = h.sh(BIN .. " --root " .. h.q(root) .. " " .. args .. " 2>&1")
  return code, out
end

local in_root = h.in_root

-- A UKI's section, extracted by objcopy into the root's /tmp (host path returned).
local function section(root, uki, name)
  local out = root .. "/tmp/section" .. name
  local o, ok = sh_plain(("objcopy -O binary --only-section=%s %s %s 2>&1"):format(name, h.q(root .. uki), h.q(out)))
  assert(ok, o)
  return out
end

-- dracut 106's lsinitrd on the UKI's .initrd: dracut's own lister, not vfioinit's reader.
local function uki_listing(root, uki)
  section(root, uki, ".initrd")
  return in_root(root, "lsinitrd /tmp/section.initrd")
end

local function uki_cmdline(root, uki)
  return (h.readfile(section(root, uki, ".cmdline")):gsub("%z", ""):gsub("%s+$", ""))
end

local function has_words(line)
  local got = {}
  for _, w in ipairs(WORDS) do
    if (" " .. line .. " "):find(" " .. w .. " ", 1, true) then got[#got + 1] = w end
  end
  return table.concat(got, " ")
end

-- Boot ESPDIR under OVMF (tools/boot-probe --uefi): the guest's command line and seconds.
local function boot(esp, expect)
  local out, ok
  for _ = 1, 3 do
    out, ok = sh_plain(("tools/boot-probe --uefi %s --expect %s --timeout 900 2>&1"):format(h.q(esp), expect))
    -- TCG: the IO-APIC timer check through interrupt remapping can panic before any
    -- initramfs code runs (see spec/96); that boot says nothing about the image
    if ok or not out:find("timer doesn't work through Interrupt-remapped IO-APIC", 1, true) then break end
    io.stderr:write("\n[uefi boot: the guest's timer check panicked under TCG; booting again]\n")
  end
  local keep = {}
  for l in out:gmatch("[^\n]+") do
    if l:match("^PROBE ") or l:match("^RESULT ") or l:match("^CMDLINE ") then keep[#keep + 1] = l end
  end
  io.stderr:write(("\n[uefi boot %s, expect %s]\n  %s\n"):format(esp, expect, table.concat(keep, "\n  ")))
  assert(ok, "boot-probe --uefi did not see 1af4:1000 bound to " .. expect .. ":\n" .. out)
  return out:match("\nCMDLINE ([^\n]*)"), tonumber(out:match("total=([%d.]+)s"))
end

local function clone(flavour)
  local out, ok = sh_plain("tools/mkroot " .. flavour .. " 2>&1")
  assert(ok, out)
  local dir = h.tmpdir()
  local root = dir .. "/root"
  out, ok = sh_plain("tools/clone-root " .. flavour .. " " .. h.q(root) .. " 2>&1")
  assert(ok, out)
  local kver = h.sh("ls " .. h.q(root .. "/lib/modules")):gsub("%s+$", "")
  return dir, root, kver
end

local function remove(dir, root)
  sh_plain("tools/clone-root --remove " .. h.q(root) .. " >/dev/null 2>&1")
  h.rm(dir)
end

describe("kernel-install layout=uki (systemd 254, dracut 106 as uki_generator)", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (tools/mkroot kinstall-uki, OVMF boots in QEMU)")
    return
  end

  it("apply rebuilds the UKI with `kernel-install add`: modules and words inside, OVMF boots it to vfio-pci; revert + rebuild take them out", function()
    local dir, root, kver = clone("kinstall-uki")
    finally(function() remove(dir, root) end)
    local uki = "/boot/efi/EFI/Linux/debian-" .. kver .. ".efi"
    local esp = dir .. "/esp"
    local function put_on_esp()
      h.sh(("rm -rf %s && mkdir -p %s/EFI/BOOT && cp %s %s/EFI/BOOT/BOOTX64.EFI"):format(h.q(esp), h.q(esp),
        h.q(root .. uki), h.q(esp)))
    end

    -- before: verify reads the UKI kernel-install built (FAIL), which lacks VFIO and the words
    local code, text = vfioinit(root, "--json verify")
    assert.are.equal(2, code, text)
    assert.are.equal(uki .. " uki", h.pyjson(text, "d['images'][0]['image'], d['images'][0]['kind']"))
    assert.are.equal("", h.vfio_listed(uki_listing(root, uki), kver))
    assert.are.equal("intel_iommu=on", has_words(uki_cmdline(root, uki)))
    put_on_esp()
    local _, t_control = boot(esp, "virtio-pci")

    local before = h.sh("sha256sum " .. h.q(root .. uki))
    code, text = vfioinit(root, "--cmdline --ids 1af4:1000 apply")
    assert.are.equal(0, code, text)
    assert.truthy(text:find("rebuilt " .. uki .. " for " .. kver .. " (dracut)", 1, true), text)
    assert.truthy(text:find("has the VFIO parameters", 1, true), text)
    assert.are_not.equal(before, h.sh("sha256sum " .. h.q(root .. uki)))
    -- kernel-install ran dracut itself: no side image, no backup left
    assert.is_nil(io.open(root .. "/boot/initrd.img-" .. kver), "dracut's own image was built besides")
    assert.is_nil(io.open(root .. uki .. ".vfioinit-prev"), "the previous UKI was left behind")
    local listing = uki_listing(root, uki)
    assert.are.equal(table.concat(VFIO_KO, " "), h.vfio_listed(listing, kver))
    assert.truthy(listing:find("etc/modprobe.d/vfioinit.conf", 1, true), listing)
    local cmdline = uki_cmdline(root, uki)
    assert.are.equal(table.concat(WORDS, " "), has_words(cmdline))
    code, text = vfioinit(root, "--cmdline --ids 1af4:1000 --json verify")
    assert.are.equal(0, code, text)

    put_on_esp()
    local guest, t_vfio = boot(esp, "vfio-pci")
    assert.are.equal(cmdline, guest)

    code, text = vfioinit(root, "revert")
    assert.are.equal(0, code, text)
    code, text = vfioinit(root, "rebuild")
    assert.are.equal(0, code, text)
    assert.are.equal("", h.vfio_listed(uki_listing(root, uki), kver))
    assert.are.equal("intel_iommu=on", has_words(uki_cmdline(root, uki)))
    io.stderr:write(("[93-kinstall] kinstall-uki OVMF boots: control %.1f s, after apply %.1f s\n"):format(t_control or -1, t_vfio or -1))
  end)
end)

describe("kernel-install layout=bls (Debian 12: systemd 252, initramfs-tools)", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (tools/mkroot kinstall-bls, OVMF + systemd-boot boot in QEMU)")
    return
  end

  it("apply copies the rebuilt image into the entry and rewrites its options; systemd-boot boots it to vfio-pci; revert rewrites the entry", function()
    local dir, root, kver = clone("kinstall-bls")
    finally(function() remove(dir, root) end)
    local entry = root .. "/boot/efi/loader/entries/debian-" .. kver .. ".conf"
    local initrd = "/boot/efi/debian/" .. kver .. "/initrd.img-" .. kver
    local function options() return (h.readfile(entry):match("\noptions%s+([^\n]*)")) end
    local function listing() return in_root(root, "lsinitramfs " .. initrd) end

    local code, text = vfioinit(root, "--json verify")
    assert.are.equal(2, code, text)
    assert.are.equal(initrd, h.pyjson(text, "d['images'][0]['image']"))
    assert.are.equal("", h.vfio_listed(listing(), kver))
    assert.are.equal("", has_words(options()))

    code, text = vfioinit(root, "--cmdline --ids 1af4:1000 apply")
    assert.are.equal(0, code, text)
    -- update-initramfs first, then kernel-install's copy
    local a = text:find("rebuilt /boot/initrd.img-" .. kver .. " for " .. kver, 1, true)
    local b = text:find("rebuilt " .. initrd .. " for " .. kver, 1, true)
    assert.truthy(a and b and a < b, text)
    assert.are.equal(table.concat(VFIO_KO, " "), h.vfio_listed(listing(), kver))
    assert.are.equal(h.readfile(root .. "/boot/initrd.img-" .. kver), h.readfile(root .. initrd))
    assert.are.equal(table.concat(WORDS, " "), has_words(options()))
    assert.is_nil(io.open(root .. initrd .. ".vfioinit-prev"), "the previous initrd was left behind")

    -- systemd-boot reads the entry kernel-install wrote; the files are where the entry names
    -- them (the root's /boot/efi is no mount point, so its paths start with /boot/efi)
    local esp = dir .. "/esp"
    local e = h.readfile(entry)
    local linux = e:match("\nlinux%s+(%S+)")
    h.sh(("mkdir -p %s/EFI/BOOT %s/loader/entries"):format(h.q(esp), h.q(esp)))
    h.sh(("cp %s %s/EFI/BOOT/BOOTX64.EFI && cp %s %s/loader/entries/"):format(
      h.q(root .. "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"), h.q(esp), h.q(entry), h.q(esp)))
    for _, p in ipairs({ linux, initrd }) do
      h.sh(("mkdir -p %s && cp %s %s"):format(h.q(esp .. p:match("^(.*)/")), h.q(root .. p), h.q(esp .. p)))
    end
    local guest, t = boot(esp, "vfio-pci")
    -- systemd-boot puts initrd=<the entry's initrd> first (for the EFI stub), then `options`
    assert.are.equal(options(), (guest:gsub("^initrd=%S+%s+", "")))

    code, text = vfioinit(root, "revert")
    assert.are.equal(0, code, text)
    assert.are.equal("", has_words(options()))
    code, text = vfioinit(root, "rebuild")
    assert.are.equal(0, code, text)
    assert.are.equal("", h.vfio_listed(listing(), kver))
    io.stderr:write(("[93-kinstall] kinstall-bls systemd-boot boot after apply: %.1f s\n"):format(t or -1))
  end)
end)
