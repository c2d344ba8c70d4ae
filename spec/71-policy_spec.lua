-- vfioinit.policy: composing the public API per distribution, on synthetic roots.
local h = require "helpers"
local vfioinit = require "vfioinit"

local function os_root(os, extra)
  local spec = { os = os, files = {}, exec = {}, corpus = {} }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return h.make_root(spec)
end

local function fedora_root()
  return os_root({ ID = "fedora", VERSION_ID = "40" },
    { corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" }, exec = { "/usr/bin/dracut" } })
end

local function debian_root()
  return os_root({ ID = "debian", VERSION_ID = '"12"' },
    { corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
      exec = { "/usr/sbin/update-initramfs" } })
end

describe("vfioinit.policy()", function()
  it("builds a policy from a table and raises on misuse", function()
    local p = vfioinit.policy({ name = "mine", match = { "debian" }, modules = { "kvmgt" }, rebuild = false })
    assert.are.equal("mine", p.name)
    assert.are.same({ "kvmgt" }, p.modules)
    assert.is_function(p.run)
    assert.are.equal("custom", vfioinit.policy({}).name)
    assert.has_error(function() vfioinit.policy("debian") end,
      "bad argument #1 to 'policy' (table expected, got string)")
    assert.has_error(function() vfioinit.policy({ rebuilt = false }) end,
      "bad argument #1 to 'policy' (unknown field 'rebuilt')")
    assert.has_error(function() vfioinit.policy({ modules = "kvmgt" }) end,
      "bad argument #1 to 'policy' (field 'modules': table expected, got string)")
    assert.has_error(function() vfioinit.policy({ kernels = 3 }) end)
    assert.has_error(function() p:extend({ bogus = 1 }) end)
    assert.has_error(function() vfioinit.policy.load(7) end)
    assert.has_error(function() vfioinit.policy.for_root(nil) end)
  end)

  it("extends without changing the original", function()
    local base = vfioinit.policy({ name = "base", modules = { "a" }, rebuild = true })
    local mine = base:extend({ modules = { "b" }, rebuild = false })
    assert.are.same({ "a" }, base.modules)
    assert.is_true(base.rebuild)
    assert.are.same({ "b" }, mine.modules)
    assert.is_false(mine.rebuild)
    assert.are.equal("base", mine.name)
  end)
end)

describe("shipped policies", function()
  it("are arch, fedora, debian and opensuse, each built with the public API only", function()
    assert.are.same({ "arch", "fedora", "debian", "opensuse" }, vfioinit.policy.names())
    for _, name in ipairs(vfioinit.policy.SHIPPED) do
      local p = assert(vfioinit.policy.load(name))
      assert.are.equal(name, p.name)
      assert.is_string(p.description)
      assert.is_true(#p.match > 0)
      local src = assert(h.readfile(h.project .. "/lua/vfioinit/policies/" .. name .. ".lua"))
      for mod in src:gmatch("require%s*%(?%s*[\"']([^\"']+)[\"']") do
        assert.are.equal("vfioinit", mod, name .. " requires " .. mod)
      end
    end
    assert.are.same({ "dracut" }, vfioinit.policy.load("fedora").generators)
    assert.are.same({ "dracut" }, vfioinit.policy.load("opensuse").generators)
    assert.is_nil(vfioinit.policy.load("arch").generators)
    assert.is_nil(vfioinit.policy.load("debian").generators)
    local p, err = vfioinit.policy.load("gentoo")
    assert.is_nil(p)
    assert.are.equal('unknown policy "gentoo" (known: arch, fedora, debian, opensuse)', err)
    p, err = vfioinit.policy.load("../x")
    assert.is_nil(p)
    assert.matches("invalid policy name", err)
  end)
end)

describe("policy.for_root()", function()
  it("picks the policy from os-release ID, then ID_LIKE in order", function()
    for _, case in ipairs({
      { { ID = "arch" }, "arch", "os-release ID=arch" },
      { { ID = "manjaro", ID_LIKE = "arch" }, "arch", "os-release ID=manjaro" },
      { { ID = "fedora" }, "fedora", "os-release ID=fedora" },
      { { ID = "rocky", ID_LIKE = '"rhel centos fedora"' }, "fedora", "os-release ID=rocky" },
      { { ID = "somerhel", ID_LIKE = '"rhel fedora"' }, "fedora", "os-release ID_LIKE=rhel" },
      { { ID = "ubuntu", ID_LIKE = "debian" }, "debian", "os-release ID=ubuntu" },
      { { ID = "mydeb", ID_LIKE = '"ubuntu debian"' }, "debian", "os-release ID_LIKE=ubuntu" },
      { { ID = '"opensuse-tumbleweed"', ID_LIKE = '"opensuse suse"' }, "opensuse", "os-release ID=opensuse-tumbleweed" },
      { { ID = "gentoo" }, "default", "no policy matches os-release ID=gentoo" },
      { nil, "default", "no policy matches os-release ID=nil" },
    }) do
      local r = os_root(case[1])
      local p, why = vfioinit.policy.for_root(r)
      h.rm(r)
      assert.are.equal(case[2], p and p.name, why)
      assert.are.equal(case[3], why)
    end
  end)

  it("fails with the reason when root is not there", function()
    local p, err = vfioinit.policy.for_root("/nonexistent/vfioinit-root")
    assert.is_nil(p)
    assert.is_string(err)
  end)

  it("uses a registered override first, in this instance only", function()
    local vf = vfioinit.new()
    local r = debian_root()
    finally(function() h.rm(r) end)
    local shipped = assert(vf.policy.load("debian"))
    local mine = vf.policy.register(shipped:extend({ modules = { "kvmgt" }, rebuild = false }))
    assert.are.equal(mine, vf.policy.load("debian"))
    local p, why = vf.policy.for_root(r)
    assert.are.equal(mine, p)
    assert.are.equal("os-release ID=debian", why)
    -- a new name is matched before the shipped ones; the last registered wins a tie
    local sid = vf.policy.register({ name = "sid", match = { "debian" }, rebuild = false })
    assert.are.equal(sid, (vf.policy.for_root(r)))
    assert.are.same({ "arch", "fedora", "debian", "opensuse", "sid" }, vf.policy.names())
    -- by name, whatever os-release says
    p, why = vf.policy.for_root(r, { name = "fedora" })
    assert.are.equal("fedora", p.name)
    assert.are.equal("chosen by name", why)
    -- the module's own instance is untouched
    assert.are.same({ "arch", "fedora", "debian", "opensuse" }, vfioinit.policy.names())
    assert.is_nil(vfioinit.policy.load("debian").modules)
  end)
end)

describe("policy:options() / :plan() / :run()", function()
  it("passes the policy's choices on, call-time options winning", function()
    local p = vfioinit.policy({ name = "t", generators = { "dracut" }, modules = { "kvmgt" },
      rebuild = false, verify = false, backup = true, timeout = 30 })
    local o = assert(p:options({ root = "/mnt/x", modules = { "other" } }))
    assert.are.equal("/mnt/x", o.root)
    assert.are.same({ "dracut" }, o.generators)
    assert.are.same({ "other" }, o.modules)
    assert.is_false(o.rebuild)
    assert.is_false(o.verify)
    assert.are.equal(30, o.timeout)
    assert.are.equal("/", assert(p:options()).root)
  end)

  it("selects kernels with a function of the installed ones", function()
    local r = os_root({ ID = "arch" }, { files = {
      ["/lib/modules/6.1.0-a/modules.dep"] = "", ["/usr/lib/modules/6.10.0-b/modules.dep"] = "",
      ["/lib/modules/6.9.0-c/modules.dep"] = "" } })
    finally(function() h.rm(r) end)
    local seen
    local newest = vfioinit.policy({ kernels = function(list) seen = list; return { list[#list] } end })
    local o = assert(newest:options({ root = r }))
    assert.are.same({ "6.1.0-a", "6.9.0-c", "6.10.0-b" }, seen)
    assert.are.same({ "6.10.0-b" }, o.kernels)
    local bad = vfioinit.policy({ name = "bad", kernels = function() return "6.1" end })
    local none, err = bad:options({ root = r })
    assert.is_nil(none)
    assert.are.equal("policy bad: kernels function returned string, expected a list", err)
    local rep, rerr, partial = bad:run({ root = r })
    assert.is_nil(rep)
    assert.are.equal(err, rerr)
    assert.is_false(partial.ok)
  end)

  it("runs the Fedora policy: dracut drop-in, log lines to the sink, no rebuild", function()
    local r = fedora_root()
    finally(function() h.rm(r) end)
    local p = assert(vfioinit.policy.for_root(r)):extend({ rebuild = false })
    local lines = {}
    local report = p:run({ root = r, log = function(m) lines[#lines + 1] = m end })
    assert.is_true(report.ok, report.error)
    assert.are.equal("fedora", report.policy)
    assert.are.same({ "dracut" }, report.generators)
    assert.are.equal("/etc/dracut.conf.d/10-vfioinit.conf", report.changes[1].path)
    assert.matches('\nforce_drivers%+=" vfio vfio_iommu_type1 vfio_pci "\n$',
      h.readfile(r .. "/etc/dracut.conf.d/10-vfioinit.conf"))
    assert.are.equal("policy fedora: run", lines[1])
    assert.are.equal("applying 1 change(s)", lines[2])
  end)

  it("takes a file-like log sink and a dry run writes nothing", function()
    local r = debian_root()
    finally(function() h.rm(r); h.rm(r .. ".log") end)
    local f = assert(io.open(r .. ".log", "w"))
    local hash = h.tree_hash(r)
    local report = assert(vfioinit.policy.load("debian")):run({ root = r, dry_run = true, log = f })
    f:close()
    assert.is_true(report.ok, report.error)
    assert.are.equal(hash, h.tree_hash(r))
    assert.are.same({ "initramfs-tools" }, report.generators)
    assert.matches("^%-%-%- etc/initramfs%-tools/modules\n", report.diff)
    assert.are.equal("policy debian: dry run\n", h.readfile(r .. ".log"))
  end)

  it("plans with the policy, and registers the policy's own generators first", function()
    local vf = vfioinit.new()
    local r = os_root({ ID = "alpine" }, { files = { ["/etc/mkinitfs/mkinitfs.conf"] = 'features="base"\n' },
      exec = { "/sbin/mkinitfs" } })
    finally(function() h.rm(r) end)
    local alpine = vf.policy({ name = "alpine", match = { "alpine" }, rebuild = false,
      extra_generators = { dofile(h.project .. "/examples/generators/mkinitfs.lua") } })
    vf.policy.register(alpine)
    local p = assert(vf.policy.for_root(r))
    assert.are.equal(alpine, p)
    local plan = assert(p:plan({ root = r }))
    assert.are.same({ "mkinitfs" }, { plan.generators[1].name })
    assert.are.equal('features="base vfio"\n', plan.changes[2].after)
    local report = p:run({ root = r })
    assert.is_true(report.ok, report.error)
    assert.are.equal(0, #assert(vf.plan({ root = r })).changes)
  end)
end)

describe("a policy's fields", function()
  it("are those of the call it wraps: cmdline, devices, force and the rest go through", function()
    local r = fedora_root()
    finally(function() h.rm(r) end)
    h.writefile(r .. "/etc/kernel/cmdline", "root=/dev/vda1 rw\n")
    local p = vfioinit.policy({ name = "pass", ids = "1af4:1000", cmdline = true, devices = { "0000:01:00.0" },
      force = true, softdeps = true, full = true, rebuild = false })
    local o = assert(p:options({ root = r }))
    assert.is_true(o.cmdline)
    assert.are.same({ "0000:01:00.0" }, o.devices)
    assert.is_true(o.force)
    -- the plan the policy makes is the plan of those options given to vfioinit.plan
    local plan = assert(p:plan({ root = r }))
    local want = assert(vfioinit.plan({ root = r, ids = "1af4:1000", cmdline = true, devices = { "0000:01:00.0" },
      force = true, softdeps = true }))
    assert.are.equal(want:diff(), plan:diff())
    assert.are.same({ "0000:01:00.0" }, plan.devices)
    local kinds = {}
    for _, c in ipairs(plan.changes) do kinds[c.generator] = true end
    assert.is_true(kinds.cmdline)
    -- a dry run of the policy writes nothing and reports the same diff
    local hash = h.tree_hash(r)
    local rep = assert(p:run({ root = r, dry_run = true }))
    assert.are.equal(want:diff(), rep.diff)
    assert.are.equal(hash, h.tree_hash(r))
  end)

  it("refuses what the call does not take, and root (given when it runs)", function()
    assert.has_error(function() vfioinit.policy({ cmdlin = true }) end,
      "bad argument #1 to 'policy' (unknown field 'cmdlin')")
    assert.has_error(function() vfioinit.policy({ root = "/" }) end,
      "bad argument #1 to 'policy' (unknown field 'root')")
    assert.has_error(function() vfioinit.policy({ cmdline = "yes" }) end,
      "bad argument #1 to 'policy' (field 'cmdline': boolean expected, got string)")
    assert.has_error(function() vfioinit.policy({ backup = false }) end)
    local p = vfioinit.policy({})
    assert.has_error(function() p:run({ root = "/", rebuidl = false }) end,
      "bad argument #1 to 'run' (unknown field 'rebuidl')")
    assert.has_error(function() p:extend({ device = { "01:00.0" } }) end,
      "bad argument #1 to 'extend' (unknown field 'device')")
  end)
end)
