-- Proof tier for issue 16 (bind by PCI address): QEMU with two identical virtio-net devices
-- (1af4:1000) at 0000:00:03.0 and 0000:00:04.0. On real Debian roots (tools/mkroot) of
-- initramfs-tools, dracut and mkinitcpio (its udev hook, and its systemd hook as archinstall
-- writes it: tools/mkroot mkinitcpio-systemd, where systemd is the image's init), `vfioinit
-- --device 0000:00:04.0 apply` builds an image in which the second device ends up with
-- vfio-pci and the first keeps virtio-pci, with nothing but the probe's stop on the kernel
-- command line. Control: the stock images (busybox's init, systemd's) leave both with
-- virtio-pci. One boot per root plus two control boots.
-- Pending unless VFIOINIT_REAL=1 (tools/test sets it; VFIOINIT_QUICK=1 skips this file).
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"
local FIRST, SECOND = "0000:00:03.0", "0000:00:04.0"

local function sh_plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local function vfioinit(root, args)
  local out, _, code = h.sh(BIN .. " --root " .. h.q(root) .. " " .. args .. " 2>&1")
  return code, out
end

-- boot(root, image, flavour, first, second) -> boot-probe's output; fails unless the two
-- devices are bound to `first` and `second`.
local function boot(root, image, flavour, first, second)
  local t0 = os.time()
  local out, ok = sh_plain(("tools/boot-probe --nics 2 --timeout 900 --expect-at %s=%s --expect-at %s=%s %s %s %s 2>&1")
    :format(FIRST, first, SECOND, second, h.q(root), h.q(image), flavour))
  local probe = {}
  for l in out:gmatch("[^\n]+") do
    if l:match("^PROBE") or l:match("^RESULT") then probe[#probe + 1] = l end
  end
  io.stderr:write(("\n[boot %s %s, expect %s=%s %s=%s, %d s]\n  %s\n"):format(flavour, image, FIRST, first, SECOND,
    second, os.time() - t0, table.concat(probe, "\n  ")))
  assert(ok, "boot-probe did not see the expected drivers:\n" .. out)
  return out
end

local function clone(flavour)
  local out, ok = sh_plain("tools/mkroot " .. flavour .. " 2>&1")
  assert(ok, out)
  local dir = h.tmpdir()
  local dest = dir .. "/root"
  out, ok = sh_plain("tools/clone-root " .. flavour .. " " .. h.q(dest) .. " 2>&1")
  assert(ok, out)
  return dest, dir
end

local function drop(dest, dir)
  sh_plain("tools/clone-root --remove " .. h.q(dest) .. " >/dev/null 2>&1")
  h.rm(dir)
end

-- The root's one kernel and its image (as `vfioinit status --json` names it).
local function image_of(root)
  local _, out = vfioinit(root, "--json status")
  local line = h.pyjson(out, "d['images'][0]['image']")
  assert(line:match("^/boot/"), out)
  return line
end

describe("bind by address, proof on real roots", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (real debootstrap roots, real generators, QEMU boots)")
    return
  end

  for _, flavour in ipairs({ "initramfs-tools", "mkinitcpio-systemd" }) do
    it("control: the stock " .. flavour .. " image leaves both identical devices with virtio-pci", function()
      local root, dir = clone(flavour)
      finally(function() drop(root, dir) end)
      boot(root, image_of(root), flavour, "virtio-pci", "virtio-pci")
    end)
  end

  -- root flavour (tools/mkroot, also tools/boot-probe's) -> its generator
  local generator = { ["mkinitcpio-systemd"] = "mkinitcpio" }
  for _, flavour in ipairs({ "initramfs-tools", "dracut", "mkinitcpio", "mkinitcpio-systemd" }) do
    it(flavour .. ": --device " .. SECOND .. " binds the second device to vfio-pci, the first keeps virtio-pci", function()
      local root, dir = clone(flavour)
      finally(function() drop(root, dir) end)
      local gen = generator[flavour] or flavour
      local code, text = vfioinit(root, "--generator " .. gen .. " --device " .. SECOND .. " apply")
      assert.are.equal(0, code, text)
      assert.truthy(text:find("rebuilt ", 1, true), text)
      -- verify reads the image: the script is inside and wired to run before udev
      code, text = vfioinit(root, "--generator " .. gen .. " verify")
      assert.are.equal(0, code, text)
      boot(root, image_of(root), flavour, "virtio-pci", "vfio-pci")
    end)
  end
end)
