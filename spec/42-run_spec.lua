-- One run: every public operation detects once, plans at most once, builds one context
-- and opens one libkmod context per kernel, however many stages it goes through
-- (detect -> plan -> apply -> rebuild -> verify; lua/vfioinit/run.lua).
--
-- The counters wrap the module table fields the code calls through (detect.detect,
-- plan.plan, context.new, core.kmod.new); the generator's command is stubbed by
-- replacing core.spawn.run with a function that writes a real newc cpio image on the host.
local h = require "helpers"
local core = require "vfioinit.core"
local detect = require "vfioinit.detect"
local planner = require "vfioinit.plan"
local context = require "vfioinit.context"

local ARCH = { ID = "arch" }

local counts = {}
local originals = {}
local function wrap(tbl, field, name)
  originals[#originals + 1] = { tbl, field, tbl[field] }
  local real = tbl[field]
  tbl[field] = function(...)
    counts[name] = (counts[name] or 0) + 1
    return real(...)
  end
end

-- booster stand-in: the image holds the kernel's VFIO directory, booster's early-load
-- list and (when there) vfioinit's modprobe.d file, as booster's own image would.
local spawned = 0
local function stub_spawn(root)
  return function(o)
    spawned = spawned + 1
    local kver, image = o.argv[5], o.argv[6]
    local d = h.tmpdir()
    local vdir = "/lib/modules/" .. kver .. "/kernel/drivers/vfio"
    h.sh(("mkdir -p %s && cp -r %s %s"):format(h.q(d .. "/usr" .. vdir:match("^(.*)/vfio$")),
      h.q(root .. vdir), h.q(d .. "/usr" .. vdir)))
    local list = {}
    for name in h.sh("find " .. h.q(root .. vdir) .. " -name '*.ko*'"):gmatch("([^/\n]+)%.ko[^\n]*") do
      list[#list + 1] = "- " .. name .. "\n"
    end
    h.writefile(d .. "/etc/booster.init.yaml", "modulesforceload:\n" .. table.concat(list))
    local mp = h.readfile(root .. "/etc/modprobe.d/vfioinit.conf")
    if mp then h.writefile(d .. "/etc/modprobe.d/vfioinit.conf", mp) end
    local _, ok = h.sh(("mkdir -p %s && cd %s && find . | cpio -o -H newc --quiet > %s"):format(h.q((root .. image):match("^(.*)/")),
      h.q(d), h.q(root .. image)))
    h.rm(d)
    assert(ok, "stub booster: cpio failed")
    return { status = 0, timed_out = false, seconds = 0.01 }
  end
end

describe("one run per public operation", function()
  local root, vfioinit, cli

  setup(function()
    wrap(detect, "detect", "detect")
    wrap(planner, "plan", "plan")
    wrap(context, "new", "context")
    wrap(core.kmod, "new", "kmod")
    root = h.make_root({ os = ARCH, exec = { "/usr/bin/booster" }, files = { ["/etc/booster.yaml"] = "" } })
    h.install_kernel(root, "cloud")
    -- not a script: core.spawn.run is stubbed, nothing needs to run inside root
    h.writefile(root .. "/usr/bin/booster", "\127ELF stand-in\n", 493)
    originals[#originals + 1] = { core.spawn, "run", core.spawn.run }
    core.spawn.run = stub_spawn(root)
    originals[#originals + 1] = { core.spawn, "start", core.spawn.start }
    originals[#originals + 1] = { core.spawn, "wait", core.spawn.wait }
    h.start_via_run(core)
    vfioinit = require "vfioinit"
    cli = require "vfioinit.cli"
  end)
  teardown(function()
    for i = #originals, 1, -1 do local o = originals[i]; o[1][o[2]] = o[3] end
    h.rm(root)
  end)
  before_each(function() counts = {}; spawned = 0 end)

  local function expect(detects, plans, kmods)
    assert.are.same({ detect = detects, plan = plans, context = detects, kmod = kmods or detects },
      { detect = counts.detect or 0, plan = counts.plan or 0, context = counts.context or 0, kmod = counts.kmod or 0 })
  end

  it("update_initramfs{ids=} plans, applies, rebuilds and verifies on one detect and one plan", function()
    local rep = vfioinit.update_initramfs({ root = root, ids = { "1af4:1000" } })
    assert.is_true(rep.ok, rep.error)
    assert.are.equal(1, spawned)                       -- the image was rebuilt ...
    assert.are.equal(1, #rep.rebuilt)
    assert.is_true(rep.verified[1].ok)                 -- ... and verified, modprobe file included
    expect(1, 1, 0)                                    -- the ids' drivers: depmod's text lists
    -- a second run finds everything in place: nothing rebuilt, still one of each
    counts = {}
    rep = vfioinit.update_initramfs({ root = root, ids = { "1af4:1000" } })
    assert.is_true(rep.ok, rep.error)
    assert.are.equal(1, spawned)
    assert.are.same({}, rep.rebuilt)
    expect(1, 1, 0)
  end)

  it("rebuild detects and plans once (the plan tells whether the config is in place), no libkmod", function()
    assert.truthy(vfioinit.rebuild({ root = root }))
    assert.are.equal(1, spawned)
    expect(1, 1, 0)
  end)

  it("verify detects once, never plans and opens no libkmod context (depmod's lists answer)", function()
    local list = assert(vfioinit.verify({ root = root }))
    assert.are.equal(1, #list)
    expect(1, 0, 0)
  end)

  it("verify reads an image with no libkmod context open", function()
    local opened, open_at_read, reads = {}, nil, 0
    local new, list = core.kmod.new, core.image.list
    finally(function() core.kmod.new, core.image.list = new, list end)
    core.kmod.new = function(...)
      local c, err = new(...)
      opened[#opened + 1] = c
      return c, err
    end
    core.image.list = function(...)
      reads = reads + 1
      open_at_read = 0
      for _, c in ipairs(opened) do
        if pcall(c.module, c, "vfio") then open_at_read = open_at_read + 1 end
      end
      return list(...)
    end
    -- with an extra module (whose state libkmod answers) and --full: the image is read
    local rep = assert(vfioinit.verify({ root = root, modules = { "vfio_pci" }, full = true }))
    assert.is_true(rep[1].ok, rep[1].error)
    assert.are.equal(1, reads)
    assert.are.equal(0, #opened)
    assert.are.equal(0, open_at_read)
    expect(1, 0, 0)
  end)

  it("the CLI's status detects once and plans once", function()
    local out = io.stdout
    local tmp = io.tmpfile()
    io.stdout = tmp  -- luacheck: ignore 122 (status prints; only the counts matter here)
    local ok, code = pcall(cli.main, { "--root", root, "status" })
    io.stdout = out  -- luacheck: ignore 122
    tmp:close()
    assert.is_true(ok, code)
    assert.are.equal(0, code)
    expect(1, 1)
  end)

  it("a rebuild that cannot keep the previous image runs nothing and says why", function()
    local image = "/boot/booster-" .. vfioinit.detect({ root = root }).kernels[1] .. ".img"
    local before = assert(h.readfile(root .. image))
    originals[#originals + 1] = { core.fs, "copy", core.fs.copy }
    local copy = core.fs.copy
    core.fs.copy = function() return nil, "No space left on device" end
    local rep, err = vfioinit.rebuild({ root = root })
    core.fs.copy = copy
    assert.is_nil(rep)
    assert.are.equal(image .. ": cannot keep a copy of the previous image, not rebuilding: No space left on device", err)
    assert.are.equal(0, spawned)
    assert.are.equal(before, h.readfile(root .. image))
  end)

  it("rebuild and update_initramfs return one report shape", function()
    local function shape(r)
      local keys = {}
      for k, v in pairs(r) do keys[#keys + 1] = k .. ":" .. type(v) end
      table.sort(keys)
      return keys
    end
    local up = assert(vfioinit.update_initramfs({ root = root, verify = false }))
    local rb = assert(vfioinit.rebuild({ root = root }))
    assert.are.same(shape(up), shape(rb))
    local kver = vfioinit.detect({ root = root }).kernels[1]
    assert.are.same({ kver }, rb.kernels)
    assert.are.same({ "booster" }, rb.generators)
    assert.are.equal(1, #rb.rebuilt)
    assert.are.equal(kver, rb.rebuilt[1].kernel)
    assert.is_true(rb.rebuilt[1].ok)
    assert.are.equal(1, #rb.verified)               -- the rebuilt image, checked by the run
    assert.is_true(rb.verified[1].ok)
  end)
end)
