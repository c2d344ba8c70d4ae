-- Proof 6b: the kernel command line through the machine's own boot path. A Debian root with
-- GRUB (tools/mkroot grub) is copied onto a BIOS disk image with GRUB's boot.img/core.img
-- (tools/grub-disk); the root's own update-grub writes grub.cfg; QEMU boots the disk through
-- SeaBIOS and GRUB (no -kernel/-append). Control: the device has virtio-pci. After
-- `vfioinit --cmdline --ids 1af4:1000 apply` (update-grub run by vfioinit, chrooted into
-- the mounted partition, where grub-probe finds the loop device) the guest's /proc/cmdline
-- is grub.cfg's `linux` line with intel_iommu=on iommu=pt vfio-pci.ids=1af4:1000, and the
-- device is bound to vfio-pci. `revert` regenerates grub.cfg without them.
-- Pending unless VFIOINIT_REAL=1 (tools/test sets it; VFIOINIT_QUICK=1 skips this file).
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"

-- Tools that are not vfioinit run without the sanitizer runtime tools/test preloads.
local function sh_plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local function words(s)
  local t = {}
  for w in (s or ""):gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- The user's GRUB configuration (helpers.grub_user_config) with the probe's break=premount
-- and no_timer_check (under TCG, with QEMU's intel-iommu and no intel_iommu=on, the kernel's
-- IO-APIC timer check through interrupt remapping panics now and then).
local function user_grub_config(mnt)
  h.grub_user_config(mnt, "console=ttyS0 break=premount no_timer_check")
end

-- The first `linux` line of grub.cfg (the default entry), by grep: {path, args...}.
local function default_linux(mnt)
  local out = h.sh("grep -m1 -E '^[[:space:]]*linux[[:space:]]' " .. h.q(mnt .. "/boot/grub/grub.cfg"))
  local w = words(out)
  table.remove(w, 1)
  return w
end

local function boot(disk, expect)
  local out, ok = sh_plain(("tools/boot-probe --disk %s --show-cmdline --expect %s --timeout 300 initramfs-tools 2>&1")
    :format(h.q(disk), expect))
  local keep = {}
  for l in out:gmatch("[^\n]+") do
    if l:match("^CMDLINE ") or l:match("^RESULT ") or l:match("^PROBE ") then keep[#keep + 1] = l end
  end
  io.stderr:write(("\n[grub disk boot, expect %s]\n  %s\n"):format(expect, table.concat(keep, "\n  ")))
  assert(ok, "boot-probe did not see 1af4:1000 bound to " .. expect .. ":\n" .. out)
  return words(out:match("\nCMDLINE ([^\n]*)") or out:match("^CMDLINE ([^\n]*)"))
end

local function count(list, key)
  local n = 0
  for _, w in ipairs(list) do
    if (w:match("^[^=]*")):gsub("-", "_") == key:gsub("-", "_") then n = n + 1 end
  end
  return n
end

describe("proof 6b: GRUB boots the command line vfioinit --cmdline wrote", function()
  if not real then
    pending("GRUB disk boot (set VFIOINIT_REAL=1; needs root, losetup, QEMU and network once for tools/mkroot grub)")
    return
  end

  it("control → virtio-pci; after apply → vfio-pci, /proc/cmdline = grub.cfg's linux line; revert regenerates", function()
    local out, ok = sh_plain("tools/mkroot grub 2>&1")
    assert(ok, out)
    local root = out:gsub("%s+$", ""):match("[^\n]+$")
    local dir = h.tmpdir()
    local disk, mnt = dir .. "/disk.img", dir .. "/mnt"
    local mounted = false
    local function mount()
      local o, k = sh_plain("tools/grub-disk mount " .. h.q(disk) .. " " .. h.q(mnt) .. " 2>&1")
      assert(k, o); mounted = true
    end
    local function umount()
      local o, k = sh_plain("tools/grub-disk umount " .. h.q(mnt) .. " 2>&1")
      assert(k, o); mounted = false
    end
    finally(function()
      if mounted then sh_plain("tools/grub-disk umount " .. h.q(mnt) .. " >/dev/null 2>&1") end
      h.rm(dir)
    end)
    out, ok = sh_plain("tools/grub-disk make " .. h.q(root) .. " " .. h.q(disk) .. " 1024 2>&1")
    assert(ok, out)

    -- the user's configuration and the root's own update-grub (no vfioinit yet)
    mount()
    user_grub_config(mnt)
    out, ok = sh_plain("bash -c " .. h.q("PROG=spec; . tools/lib-chroot.sh; chroot_run " .. h.q(mnt) .. " update-grub") .. " 2>&1")
    assert(ok, out)
    local before = default_linux(mnt)
    assert.are.equal(0, count(before, "iommu"))
    umount()
    local guest = boot(disk, "virtio-pci")
    assert.are.equal(0, count(guest, "vfio_pci.ids"))

    -- vfioinit: edits, rebuilds the initramfs, runs update-grub, reads grub.cfg back
    mount()
    local code
    out, ok, code = h.sh(BIN .. " --root " .. h.q(mnt) .. " --cmdline --ids 1af4:1000 apply 2>&1")
    assert.are.equal(0, code, out)
    assert.matches("regenerated with update-grub", out, 1, true)
    local line = default_linux(mnt)
    umount()
    for _, p in ipairs({ "intel_iommu=on", "iommu=pt", "vfio-pci.ids=1af4:1000" }) do
      assert.are.equal(1, count(line, p:match("^[^=]*")), p)
    end
    guest = boot(disk, "vfio-pci")
    -- what the kernel got is exactly that line (GRUB adds BOOT_IMAGE=<the linux path>)
    local want = { "BOOT_IMAGE=" .. line[1] }
    for i = 2, #line do want[#want + 1] = line[i] end
    assert.are.same(want, guest)

    -- revert restores the config and regenerates grub.cfg without the parameters
    mount()
    out, ok, code = h.sh(BIN .. " --root " .. h.q(mnt) .. " revert 2>&1")
    assert.are.equal(0, code, out)
    assert.are.same(before, default_linux(mnt))
    umount()
  end)
end)
