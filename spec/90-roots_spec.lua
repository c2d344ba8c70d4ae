-- Proof tier, part 1: the real Debian roots built by tools/mkroot (debootstrap + a real Debian
-- kernel package whose postinst ran the root's real generator). Slow (minutes on first build,
-- cached after that in $VFIOINIT_CACHE/roots), needs root and network: pending unless
-- VFIOINIT_REAL=1. Images are listed with each generator's own lister run inside the root
-- (lsinitramfs, lsinitrd, lsinitcpio), an oracle independent of vfioinit's reader.
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"

-- Each flavour: the image path for a kernel, the lister, and files only its generator puts in.
local flavours = {
  ["initramfs-tools"] = {
    image = function(k) return "/boot/initrd.img-" .. k end,
    list = "lsinitramfs", kernels = 1,
    marks = { "conf/initramfs.conf", "scripts/functions" },
  },
  multi = {
    image = function(k) return "/boot/initrd.img-" .. k end,
    list = "lsinitramfs", kernels = 2,
    marks = { "conf/initramfs.conf", "scripts/functions" },
  },
  dracut = {
    image = function(k) return "/boot/initrd.img-" .. k end,
    list = "lsinitrd", kernels = 1,
    marks = { "dracut modules:", "usr/lib/dracut-lib.sh" },
  },
  mkinitcpio = {
    image = function(k) return "/boot/initramfs-" .. k .. ".img" end,
    list = "lsinitcpio", kernels = 1,
    marks = { "init_functions", "hooks/udev" },
  },
}
local order = { "initramfs-tools", "dracut", "mkinitcpio", "multi" }

-- Runs CMD chrooted in ROOT with /proc, /sys, /dev in a private mount namespace.
local function in_root(root, cmd)
  return h.sh(("bash -c %s"):format(h.q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s %s 2>&1"):format(h.q(root), cmd))))
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("real roots (tools/mkroot)", function()
  if not real then
    pending("set VFIOINIT_REAL=1 to build/use the real Debian roots (root, network, minutes)")
    return
  end

  for _, name in ipairs(order) do
    local fl = flavours[name]
    describe(name, function()
      local root, kernels

      setup(function()
        local out, ok = h.sh("tools/mkroot " .. name .. " 2>&1")
        assert(ok, "tools/mkroot " .. name .. " failed:\n" .. out)
        local l = lines(out)
        root = l[#l]
        kernels = lines((h.sh("bash -c " .. h.q("PROG=spec; . tools/lib-chroot.sh; root_kernels " .. h.q(root)))))
      end)

      it("has its kernel(s) under /lib/modules with a /boot/vmlinuz", function()
        assert.equal(fl.kernels, #kernels)
        for _, k in ipairs(kernels) do
          assert.truthy(h.readfile(root .. "/lib/modules/" .. k .. "/modules.dep"), k .. ": modules.dep")
          assert.equal(0, select(3, h.sh("test -s " .. h.q(root .. "/boot/vmlinuz-" .. k))))
        end
      end)

      it("has an image built by its generator, holding kernel modules", function()
        for _, k in ipairs(kernels) do
          local img = fl.image(k)
          local out, ok = in_root(root, fl.list .. " " .. h.q(img))
          assert(ok, fl.list .. " " .. img .. " failed:\n" .. out)
          for _, mark in ipairs(fl.marks) do
            assert(out:find(mark, 1, true), img .. " lacks " .. mark .. " (not built by " .. name .. "?)")
          end
          local pat = "lib/modules/" .. k:gsub("%p", "%%%0") .. "/kernel/%S+%.ko"
          assert(out:find(pat), img .. " lists no kernel module of " .. k)
          -- and none of another kernel (multi: each image matches its kernel)
          for _, other in ipairs(kernels) do
            if other ~= k then
              assert.falsy(out:find("lib/modules/" .. other .. "/", 1, true))
            end
          end
        end
      end)

      it("has exactly its own generator", function()
        local has = function(p) return select(2, h.sh("test -e " .. h.q(root .. p))) end
        if name == "dracut" then
          assert.falsy(has("/usr/sbin/update-initramfs"))
          assert.falsy(has("/usr/bin/mkinitcpio"))
        elseif name == "mkinitcpio" then
          assert.falsy(has("/usr/sbin/update-initramfs"))
          assert.falsy(has("/usr/bin/dracut"))
          assert.truthy(has("/usr/bin/mkinitcpio"))
        else
          assert.truthy(has("/usr/sbin/update-initramfs"))
          assert.falsy(has("/usr/bin/dracut"))
        end
      end)
    end)
  end

  it("clone-root copies a root and removes the copy, leaving the cache untouched", function()
    local dir = h.tmpdir()
    local dest = dir .. "/clone"
    local root = lines((h.sh("tools/mkroot initramfs-tools 2>/dev/null")))
    root = root[#root]
    local before = h.sh("cat " .. h.q(root .. "/etc/initramfs-tools/modules"))
    local out, ok = h.sh("tools/clone-root initramfs-tools " .. h.q(dest) .. " 2>&1")
    assert(ok, out)
    h.writefile(dest .. "/etc/initramfs-tools/modules", "vfio_pci\n")
    assert.equal(before, (h.sh("cat " .. h.q(root .. "/etc/initramfs-tools/modules"))))
    out, ok = h.sh("tools/clone-root --remove " .. h.q(dest) .. " 2>&1")
    assert(ok, out)
    assert.falsy(h.readfile(dest .. "/.vfioinit-root"))
    h.rm(dir)
  end)
end)
