-- vfioinit.modules / drivers_for against a real Debian kernel tree (libkmod).
local h = require "helpers"
local vfioinit = require "vfioinit"

local function by_name(list)
  local t = {}
  for _, m in ipairs(list) do t[m.name] = m end
  return t
end

describe("modules()", function()
  local root, kver
  setup(function()
    root = h.tmpdir()
    kver = h.install_kernel(root, "cloud")
  end)
  teardown(function() h.rm(root) end)

  it("resolves every VFIO module of a real 6.1 kernel to its .ko, with vfio as a dependency of vfio_pci", function()
    local mods = assert(vfioinit.modules({ root = root, kernel = kver }))
    local m = by_name(mods)
    assert.are.equal(4, #mods)
    for _, n in ipairs({ "vfio", "vfio_iommu_type1", "vfio_pci", "vfio_virqfd" }) do
      assert.are.equal("module", m[n].state, n)
      assert.truthy(m[n].path:match("^/lib/modules/" .. kver:gsub("%p", "%%%0") .. "/kernel/drivers/vfio/"), m[n].path)
      -- the path is inside root and is a real file there
      assert.truthy(h.readfile(root .. m[n].path), m[n].path)
    end
    assert.truthy(m.vfio_pci.path:match("vfio%-pci%.ko$"))
    local deps = {}
    for _, d in ipairs(m.vfio_pci.deps) do deps[d] = true end
    assert.is_true(deps.vfio)
  end)

  it("leaves vfio_virqfd out for a kernel that does not ship it (>= 6.2)", function()
    local r2 = h.tmpdir()
    finally(function() h.rm(r2) end)
    local k2 = h.install_kernel(r2, "cloud", "6.2.0-test", function(dir)
      h.sh("rm -f " .. h.q(dir) .. "/kernel/drivers/vfio/vfio_virqfd.ko*")
    end)
    local m = by_name(assert(vfioinit.modules({ root = r2, kernel = k2 })))
    assert.is_nil(m.vfio_virqfd)
    assert.are.equal("module", m.vfio_pci.state)
  end)

  it("reports a module listed in modules.builtin as builtin, without a path", function()
    local r3 = h.tmpdir()
    finally(function() h.rm(r3) end)
    local k3 = h.install_kernel(r3, "cloud", "6.1.0-builtin", function(dir)
      h.sh("rm -f " .. h.q(dir) .. "/kernel/drivers/vfio/vfio.ko")
      local b = h.readfile(dir .. "/modules.builtin")
      -- replace, never append: the tree is hard-linked to the cached kernel
      h.sh("rm -f " .. h.q(dir .. "/modules.builtin"))
      h.writefile(dir .. "/modules.builtin", b .. "kernel/drivers/vfio/vfio.ko\n")
    end)
    local m = by_name(assert(vfioinit.modules({ root = r3, kernel = k3 })))
    assert.are.equal("builtin", m.vfio.state)
    assert.is_nil(m.vfio.path)
    assert.are.equal("module", m.vfio_pci.state)
  end)

  it("reports missing modules as missing", function()
    local r4 = h.tmpdir()
    finally(function() h.rm(r4) end)
    local k4 = h.install_kernel(r4, "cloud", "6.1.0-novfio", function(dir)
      h.sh("rm -rf " .. h.q(dir) .. "/kernel/drivers/vfio")
    end)
    local m = by_name(assert(vfioinit.modules({ root = r4, kernel = k4 })))
    assert.are.equal("missing", m.vfio.state)
    assert.are.equal("missing", m.vfio_pci.state)
  end)

  it("fails with the path for an unknown kernel or a missing root", function()
    local mods, err = vfioinit.modules({ root = root, kernel = "9.9.9" })
    assert.is_nil(mods)
    assert.truthy(err:match("/lib/modules/9%.9%.9"))
    mods, err = vfioinit.modules({ root = "/nonexistent/root", kernel = kver })
    assert.is_nil(mods)
    assert.is_string(err)
  end)

  it("raises on misuse", function()
    assert.has_error(function() vfioinit.modules("x") end)
    assert.has_error(function() vfioinit.modules({ root = root }) end)
  end)
end)

describe("drivers_for()", function()
  local root, kver
  setup(function()
    root = h.tmpdir()
    kver = h.install_kernel(root, "cloud")
  end)
  teardown(function() h.rm(root) end)

  it("finds virtio_pci for the virtio-net device 1af4:1000", function()
    local r = assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = { "1af4:1000" } }))
    assert.are.equal("1af4:1000", r[1].id)
    assert.are.same({ "virtio_pci" }, r[1].modules)
  end)

  it("accepts upper case and comma-separated ids, and finds nothing for an unknown device", function()
    local r = assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = "1AF4:1000,dead:beef" }))
    assert.are.equal(2, #r)
    assert.are.same({ "virtio_pci" }, r[1].modules)
    assert.are.same({}, r[2].modules)
  end)

  it("refuses malformed ids", function()
    local r, err = vfioinit.drivers_for({ root = root, kernel = kver, ids = { "10de-1b80" } })
    assert.is_nil(r)
    assert.truthy(err:match("invalid device id"))
  end)

  it("finds amdgpu and nouveau in Debian's generic kernel", function()
    local r5 = h.tmpdir()
    finally(function() h.rm(r5) end)
    local k5 = h.install_kernel(r5, "generic")
    local r = assert(vfioinit.drivers_for({ root = r5, kernel = k5, ids = { "1002:73bf", "10de:1b80" } }))
    local amd, nv = {}, {}
    for _, m in ipairs(r[1].modules) do amd[m] = true end
    for _, m in ipairs(r[2].modules) do nv[m] = true end
    assert.is_true(amd.amdgpu)
    assert.is_true(nv.nouveau)
  end)
end)

-- verify asks depmod's text lists (src/moddep.c) instead of libkmod: the same answers, on
-- the real kernel and on the variants above (no vfio_virqfd, vfio built in, no vfio at all).
describe("kernel.states()", function()
  local kernel = require "vfioinit.kernel"
  local NAMES = { "vfio", "vfio_iommu_type1", "vfio-pci", "vfio_pci", "vfio_virqfd", "virtio_net", "virtio-blk",
    "ext4", "crc32c_generic", "no_such_module" }
  local variants = {
    { "6.1.0-plain" },
    { "6.1.0-novirqfd", function(dir) h.sh("rm -f " .. h.q(dir) .. "/kernel/drivers/vfio/vfio_virqfd.ko*") end },
    { "6.1.0-builtin", function(dir)
      h.sh("rm -f " .. h.q(dir) .. "/kernel/drivers/vfio/vfio.ko")
      local b = h.readfile(dir .. "/modules.builtin")
      h.sh("rm -f " .. h.q(dir .. "/modules.builtin"))
      h.writefile(dir .. "/modules.builtin", b .. "kernel/drivers/vfio/vfio.ko\n")
    end },
    { "6.1.0-novfio", function(dir) h.sh("rm -rf " .. h.q(dir) .. "/kernel/drivers/vfio") end },
  }

  it("says what libkmod says of each module", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local seen = {}
    for _, v in ipairs(variants) do
      local kver = h.install_kernel(root, "cloud", v[1], v[2])
      local st = assert(kernel.states(root, "/lib/modules/" .. kver, NAMES))
      for _, n in ipairs(NAMES) do
        local want, err = kernel.module_state({ root = root, kernel = kver, name = n })
        assert(want ~= nil, err)
        assert.are.equal(want or nil, st[n], kver .. " " .. n)
        seen[tostring(want)] = true
      end
    end
    -- every answer was given somewhere: module, builtin and missing
    assert.are.same({ module = true, builtin = true, ["false"] = true }, seen)
  end)

  it("lists nothing for a kernel without the lists, and names a list that is no file", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.sh("mkdir -p " .. h.q(root .. "/lib/modules/9.9") .. " && mkfifo " .. h.q(root .. "/lib/modules/9.9/modules.builtin"))
    local st, err = kernel.states(root, "/lib/modules/9.9", { "vfio" })
    assert.is_nil(st)
    assert.are.equal("/lib/modules/9.9/modules.builtin: not a regular file (fifo)", err)
    h.sh("rm " .. h.q(root .. "/lib/modules/9.9/modules.builtin"))
    assert.are.same({}, assert(kernel.states(root, "/lib/modules/9.9", { "vfio" })))
  end)
end)
