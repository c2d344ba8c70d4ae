-- vfioinit.machine: one model of the machine. Every consumer reads its facts from the
-- one table: generator defaults, policy matching and image names from FAMILIES, the GPU
-- list in every ordering, one `sort -V`, one pkgbase lookup, one modprobe.d list.
local h = require "helpers"
local vfioinit = require "vfioinit"
local machine = require "vfioinit.machine"
local registry = require "vfioinit.generators"

local GENS = { "mkinitcpio", "dracut", "initramfs-tools", "booster" }
local EXEC = { "/usr/bin/mkinitcpio", "/usr/bin/dracut", "/usr/sbin/update-initramfs", "/usr/bin/booster" }

local function gen(name) return assert(registry.new():get(name)) end

-- A root with every built-in generator installed and no hook: only os-release decides.
local function os_root(os)
  return h.make_root({ os = os, exec = EXEC })
end

describe("machine.FAMILIES", function()
  it("is where every generator's distro_default and every shipped policy's match come from", function()
    for _, name in ipairs(GENS) do
      assert.are.same(machine.ids("generator", name), gen(name).distro_default, name)
    end
    local shipped = {}
    for _, name in ipairs(vfioinit.policy.SHIPPED) do
      shipped[name] = true
      assert.are.same(machine.ids("policy", name), assert(vfioinit.policy.load(name)).match, name)
    end
    for _, f in ipairs(machine.FAMILIES) do
      if f.policy then assert.is_true(shipped[f.policy], f.name) end
      if f.generator then assert.truthy(registry.new():get(f.generator), f.name) end
    end
  end)

  it("decides detection's default generator and the policy for every listed os-release ID", function()
    for _, f in ipairs(machine.FAMILIES) do
      for _, id in ipairs(f.ids) do
        local r = os_root({ ID = id })
        finally(function() h.rm(r) end)
        assert.are.equal(f.generator, assert(vfioinit.detect({ root = r })).active, id)
        local p = assert(vfioinit.policy.for_root(r))
        assert.are.equal(f.policy or "default", p.name, id)
      end
    end
  end)

  it("matches through ID_LIKE when ID is unknown, and names dracut's image per family", function()
    local dracut = gen("dracut")
    for _, f in ipairs(machine.FAMILIES) do
      local like = f.ids[#f.ids]
      local r = os_root({ ID = "someotherdistro", ID_LIKE = '"nothing ' .. like .. '"' })
      finally(function() h.rm(r) end)
      local inv = assert(vfioinit.detect({ root = r }))
      assert.are.equal(f.generator, inv.active, like)
      local want = (f.initrd or "/boot/initramfs-%s.img"):format("6.1.0-x")
      assert.are.equal(want, dracut.image_path({ distro = inv.distro }, "6.1.0-x"), like)
    end
    assert.are.equal("/boot/initrd.img-6.1.0-x", gen("initramfs-tools").image_path({}, "6.1.0-x"))
    assert.are.equal("/boot/initramfs-6.1.0-x.img",
      dracut.image_path({ distro = { id = "gentoo", id_like = {} } }, "6.1.0-x"))
  end)
end)

describe("machine.GPU", function()
  local saved
  before_each(function() saved = machine.GPU end)
  after_each(function() machine.GPU = saved end)

  it("is the one list every ordering and the modprobe softdeps read", function()
    machine.GPU = { "mygpu" }
    local want = { "vfio" }
    assert.are.equal("vfio\nmygpu\namdgpu\n", gen("initramfs-tools").edit_text("mygpu\namdgpu\n", want))
    assert.are.equal("modules_force_load: vfio,mygpu\n",
      gen("booster").edit_text("modules_force_load: mygpu\n", want))
    assert.are.equal("MODULES=(vfio mygpu)\n", gen("mkinitcpio").edit_text("MODULES=(mygpu)\n", want))
    assert.are.equal('force_drivers+=" vfio mygpu "\n',
      gen("dracut").edit_text('force_drivers+=" mygpu "\n', want))
    -- amdgpu is no GPU driver now: nothing has to move before it
    assert.are.equal("amdgpu\nvfio\n", gen("initramfs-tools").edit_text("amdgpu\n", want))

    -- the whole plan: the context's default set and the softdeps
    local r = h.make_root({ os = { ID = "debian" }, exec = { "/usr/sbin/update-initramfs" },
      files = { ["/etc/initramfs-tools/modules"] = "mygpu\n" } })
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, softdeps = true, modules = { "vfio" } }))
    local by = {}
    for _, c in ipairs(plan.changes) do by[c.path] = c.after end
    assert.truthy(by["/etc/initramfs-tools/modules"]:find("^vfio\n.*mygpu\n$"), by["/etc/initramfs-tools/modules"])
    local mp = by["/etc/modprobe.d/vfioinit.conf"]
    assert.truthy(mp:find("\nsoftdep mygpu pre: vfio-pci\n", 1, true), mp)
    assert.falsy(mp:find("amdgpu", 1, true), mp)
  end)
end)

describe("machine.version_less", function()
  it("orders kernels and drop-ins as `sort -V` does", function()
    local names = { "6.1.0", "6.1.0~rc1", "5.9.0", "5.10.0", "6.1.0-rc1", "6.1.0a", "6.10.0", "6.1.0.1" }
    local r = h.tmpdir()
    finally(function() h.rm(r) end)
    for _, k in ipairs(names) do h.writefile(r .. "/lib/modules/" .. k .. "/modules.dep", "") end
    local expect = {}
    for l in h.sh("printf '%s\\n' " .. table.concat(names, " ") .. " | LC_ALL=C.UTF-8 sort -V"):gmatch("[^\n]+") do
      expect[#expect + 1] = l
    end
    assert.are.same(expect, assert(vfioinit.detect({ root = r })).kernels)
  end)
end)

describe("machine.pkgbase", function()
  it("names mkinitcpio's and booster's images alike, and only a plain package name counts", function()
    local r = h.tmpdir()
    finally(function() h.rm(r) end)
    local ctx = require("vfioinit.context").new({ root = r })
    h.writefile(r .. "/usr/lib/modules/6.9.1-zen1-1/pkgbase", "linux-zen\n")
    h.writefile(r .. "/usr/lib/modules/6.9.2-x/pkgbase", "../../etc/x\n")
    h.writefile(r .. "/usr/lib/modules/6.9.3-y/pkgbase", "")
    assert.are.equal("/boot/initramfs-linux-zen.img", gen("mkinitcpio").image_path(ctx, "6.9.1-zen1-1"))
    assert.are.equal("/boot/booster-linux-zen.img", gen("booster").image_path(ctx, "6.9.1-zen1-1"))
    for _, k in ipairs({ "6.9.2-x", "6.9.3-y" }) do
      assert.are.equal("/boot/initramfs-" .. k .. ".img", gen("mkinitcpio").image_path(ctx, k))
      assert.are.equal("/boot/booster-" .. k .. ".img", gen("booster").image_path(ctx, k))
    end
  end)
end)

describe("machine.MODPROBE_DIRS", function()
  local root, kver
  setup(function()
    root = h.tmpdir()
    kver = h.install_kernel(root, "cloud")
  end)
  teardown(function() h.rm(root) end)

  it("is what libkmod reads, in kmod's precedence (/usr/local/lib read, /run before /lib)", function()
    h.writefile(root .. "/usr/local/lib/modprobe.d/local.conf", "alias pci:v00001AF4d00001000* localdrv\n")
    local res = assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = { "1af4:1000" } }))
    assert.are.same({ "localdrv" }, res[1].modules)
    h.rm(root .. "/usr/local/lib/modprobe.d")
    h.writefile(root .. "/run/modprobe.d/x.conf", "alias pci:v00001AF4d00001000* rundrv\n")
    h.writefile(root .. "/lib/modprobe.d/x.conf", "alias pci:v00001AF4d00001000* libdrv\n")
    res = assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = { "1af4:1000" } }))
    assert.are.same({ "rundrv" }, res[1].modules)
  end)

  it("is where the conflict check looks too", function()
    h.writefile(root .. "/usr/local/lib/modprobe.d/bl.conf", "# x\nblacklist vfio_pci\n")
    finally(function() h.rm(root .. "/usr/local/lib/modprobe.d") end)
    local ctx = require("vfioinit.context").new({ root = root })
    assert.are.equal("/usr/local/lib/modprobe.d/bl.conf:2: blacklists vfio_pci, which would keep it from claiming the devices",
      require("vfioinit.modprobe").conflicts(ctx, nil))
  end)
end)

describe("machine.command over a run's context", function()
  -- A merged /usr (Debian 12, Fedora, Arch): /sbin and /bin are links to /usr's, whose
  -- names were listed already; a separate /bin is listed and found.
  it("lists a directory that /sbin or /bin links to once, and a separate one as well", function()
    local root = h.make_root({ exec = { "/usr/bin/dracut", "/usr/sbin/update-initramfs" } })
    finally(function() h.rm(root) end)
    local function listed(ctx, names)
      local dirs, dir = {}, ctx.dir
      ctx.dir = function(p) dirs[#dirs + 1] = p; return dir(p) end
      local found = {}
      for _, n in ipairs(names) do found[#found + 1] = machine.command(ctx, n) or "-" end
      return dirs, found
    end
    local context = require "vfioinit.context"
    h.sh(("ln -s usr/bin %s/bin && ln -s usr/sbin %s/sbin"):format(h.q(root), h.q(root)))
    local dirs, found = listed(context.new({ root = root, facts = true }), { "dracut", "update-initramfs", "booster" })
    assert.are.same({ "/usr/sbin", "/usr/bin" }, dirs)
    assert.are.same({ "/usr/bin/dracut", "/usr/sbin/update-initramfs", "-" }, found)
    h.sh(("rm %s/bin && mkdir %s/bin && cp %s/usr/bin/dracut %s/bin/booster"):format(h.q(root), h.q(root), h.q(root), h.q(root)))
    dirs, found = listed(context.new({ root = root, facts = true }), { "dracut", "booster" })
    assert.are.same({ "/usr/sbin", "/usr/bin", "/bin" }, dirs)
    assert.are.same({ "/usr/bin/dracut", "/bin/booster" }, found)
  end)
end)
