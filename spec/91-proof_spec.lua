-- Proof tier, part 2: vfioinit on the real Debian roots of tools/mkroot. `apply` edits and
-- rebuilds with the real generator, the generator's own lister (an oracle independent of
-- vfioinit's reader) sees the modules, and a QEMU boot of the real kernel with the rebuilt
-- image shows the virtio-net device 1af4:1000 bound to vfio-pci with nothing on the kernel
-- command line. Negative controls: the stock image, and (initramfs-tools) the module list
-- without the modprobe.d file, both leave the device with virtio-pci.
-- Pending unless VFIOINIT_REAL=1 (tools/test sets it; VFIOINIT_QUICK=1 skips this file).
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"

local LISTER = { ["initramfs-tools"] = "lsinitramfs", multi = "lsinitramfs", dracut = "lsinitrd", mkinitcpio = "lsinitcpio" }
local VFIO_KO = h.VFIO_KO

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- Tools that are not vfioinit run without the sanitizer runtime tools/test preloads.
local function sh_plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local function vfioinit(root, args)
  local out, ok, code = h.sh(BIN .. " --root " .. h.q(root) .. " " .. args .. " 2>&1")
  return code, out
end

local function lister(root, flavour, image)
  local out, ok = sh_plain(("bash -c %s"):format(h.q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s %s %s")
    :format(h.q(root), LISTER[flavour], h.q(image)))) .. " 2>&1")
  assert(ok, LISTER[flavour] .. " failed:\n" .. out)
  return out
end

local function boot(root, image, flavour, expect)
  local out, ok = sh_plain(("tools/boot-probe --expect %s %s %s %s 2>&1"):format(expect, h.q(root), h.q(image),
    flavour == "multi" and "initramfs-tools" or flavour))
  local probe = {}
  for _, l in ipairs(lines(out)) do
    if l:match("^PROBE ") or l:match("^RESULT ") then probe[#probe + 1] = l end
  end
  io.stderr:write(("\n[boot %s %s, expect %s]\n  %s\n"):format(flavour, image, expect, table.concat(probe, "\n  ")))
  assert(ok, "boot-probe did not see 1af4:1000 bound to " .. expect .. ":\n" .. out)
  return out
end

local function clone(flavour)
  local dir = h.tmpdir()
  local dest = dir .. "/root"
  local out, ok = sh_plain("tools/clone-root " .. flavour .. " " .. h.q(dest) .. " 2>&1")
  assert(ok, out)
  return dest, dir
end

local function drop(dest, dir)
  sh_plain("tools/clone-root --remove " .. h.q(dest) .. " >/dev/null 2>&1")
  h.rm(dir)
end

local function images(root)
  local out = select(2, vfioinit(root, "--json status"))
  local f = os.tmpname()
  h.writefile(f, out)
  local list = h.sh("python3 -c " .. h.q("import json,sys\nfor i in json.load(open(sys.argv[1]))['images']: print(i['kernel'], i['image'])") .. " " .. h.q(f))
  os.remove(f)
  local t = {}
  for _, l in ipairs(lines(list)) do
    local k, img = l:match("^(%S+) (%S+)$")
    t[#t + 1] = { kernel = k, image = img }
  end
  return t
end

local function assert_listed(listing, kver)
  assert.are.equal(table.concat(VFIO_KO, " "), h.vfio_listed(listing, kver))
end

describe("proof on real roots", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (real debootstrap roots, real generators, QEMU boots)")
    return
  end

  for _, flavour in ipairs({ "initramfs-tools", "dracut", "mkinitcpio" }) do
    it(flavour .. ": stock image binds virtio-pci; after `apply --ids 1af4:1000` the image alone binds vfio-pci; revert + rebuild removes the modules", function()
      local out, ok = sh_plain("tools/mkroot " .. flavour .. " 2>&1")
      assert(ok, out)
      local root, dir = clone(flavour)
      finally(function() drop(root, dir) end)
      local img = assert(images(root)[1], "no image in status")
      local stock = h.vfio_listed(lister(root, flavour, img.image), img.kernel)
      boot(root, img.image, flavour, "virtio-pci")

      local code, text = vfioinit(root, "--ids 1af4:1000 apply")
      assert.are.equal(0, code, text)
      assert.truthy(text:find("rebuilt " .. img.image, 1, true), text)
      code, text = vfioinit(root, "--ids 1af4:1000 verify")
      assert.are.equal(0, code, text)
      local listing = lister(root, flavour, img.image)
      assert_listed(listing, img.kernel)
      assert.truthy(listing:find("etc/modprobe.d/vfioinit.conf", 1, true), "modprobe file not in the image")
      boot(root, img.image, flavour, "vfio-pci")

      -- a second apply touches nothing and rebuilds nothing
      local st = h.sh("stat -c '%Y %s' " .. h.q(root .. img.image))
      code, text = vfioinit(root, "--ids 1af4:1000 apply")
      assert.are.equal(0, code, text)
      assert.truthy(text:find("nothing rebuilt", 1, true), text)
      assert.are.equal(st, h.sh("stat -c '%Y %s' " .. h.q(root .. img.image)))

      code, text = vfioinit(root, "revert")
      assert.are.equal(0, code, text)
      code, text = vfioinit(root, "rebuild")
      assert.are.equal(0, code, text)
      -- back to what the generator put in by itself (stock generic images may carry some)
      local again = lister(root, flavour, img.image)
      assert.are.equal(stock, h.vfio_listed(again, img.kernel))
      assert.falsy(again:find("etc/modprobe.d/vfioinit.conf", 1, true))
      code = vfioinit(root, "verify")
      assert.are.equal(2, code)
    end)
  end

  it("initramfs-tools: the module list without the modprobe.d file leaves the device to virtio-pci", function()
    local root, dir = clone("initramfs-tools")
    finally(function() drop(root, dir) end)
    local code, text = vfioinit(root, "apply")
    assert.are.equal(0, code, text)
    local img = images(root)[1]
    assert_listed(lister(root, "initramfs-tools", img.image), img.kernel)
    boot(root, img.image, "initramfs-tools", "virtio-pci")
  end)

  it("two kernels: apply rebuilds and verifies both images", function()
    local out, ok = sh_plain("tools/mkroot multi 2>&1")
    assert(ok, out)
    local root, dir = clone("multi")
    finally(function() drop(root, dir) end)
    local code, text = vfioinit(root, "apply")
    assert.are.equal(0, code, text)
    local imgs = images(root)
    assert.are.equal(2, #imgs)
    for _, img in ipairs(imgs) do
      assert.truthy(text:find("rebuilt " .. img.image, 1, true), text)
      assert_listed(lister(root, "multi", img.image), img.kernel)
    end
    code, text = vfioinit(root, "--kernel " .. imgs[1].kernel .. " verify")
    assert.are.equal(0, code, text)
  end)
end)
