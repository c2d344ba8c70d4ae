local core = require "vfioinit.core"
local rebuild = require "vfioinit.rebuild"
local H = require "helpers"

local STANDIN = H.project .. "/spec/fixtures/standin-booster"
local KERNELS = { "6.1.0-test", "6.2.0-test" }
-- what the stand-in runs, from the root's busybox
local APPLETS = "sh cat echo printf mkdir mktemp find cpio mv rm sleep"

local busybox = H.static_busybox()
local root_it = H.chroot_it(it, pending)

-- The booster stand-in's generator: booster's real command line, one command per kernel.
local gen, image_of = H.standin_booster()

-- verify through the host's cpio: every VFIO module of kver must be inside.
local function verify(root)
  return function(g, kver, image)
    assert.are.equal("booster", g.name)
    local out, ok = H.sh("cpio -it --quiet < " .. H.q(root .. image) .. " 2>&1")
    if not ok then return nil, image .. ": not a cpio archive" end
    local missing = {}
    for _, m in ipairs { "vfio.ko", "vfio_iommu_type1.ko", "pci/vfio-pci.ko" } do
      local want = "usr/lib/modules/" .. kver .. "/kernel/drivers/vfio/" .. m
      if not out:find(want, 1, true) then missing[#missing + 1] = m:match("([^/]+)%.ko$") end
    end
    return #missing == 0, missing
  end
end

local function lines_of(s)
  local t = {}
  for l in (s .. "\n"):gmatch("([^\n]*)\n") do t[l] = true end
  return t
end

describe("rebuild.run()", function()
  local root, ctx, old, output, logs

  local function set_mode(mode) H.writefile(root .. "/etc/standin-booster.mode", mode .. "\n") end
  local function mounted() return H.sh("grep -F " .. H.q(root) .. " /proc/self/mountinfo") end
  local function opts(extra)
    local o = {
      kernels = KERNELS, verify = verify(root), timeout = 30,
      on_output = function(line) output[#output + 1] = line end,
      log = function(msg) logs[#logs + 1] = msg end,
    }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  before_each(function()
    output, logs = {}, {}
    root = H.tmpdir()
    if not busybox then return end
    H.sh("mkdir -p " .. H.q(root) .. "/bin " .. H.q(root) .. "/usr/bin " .. H.q(root) .. "/boot " .. H.q(root) .. "/tmp")
    H.sh("cp " .. H.q(busybox) .. " " .. H.q(root .. "/bin/busybox"))
    H.sh("cd " .. H.q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    H.sh("cp " .. H.q(STANDIN) .. " " .. H.q(root .. "/usr/bin/booster"))
    old = {}
    for _, k in ipairs(KERNELS) do
      -- a previous image: a real cpio archive with distinct bytes per kernel
      H.sh(("d=$(mktemp -d) && echo 'old image for %s' > $d/old && (cd $d && echo old | cpio -o -H newc --quiet) > %s && rm -rf $d")
        :format(k, H.q(root .. image_of(k))))
      old[k] = assert(H.readfile(root .. image_of(k)))
    end
    ctx = { root = root, kernels = KERNELS }
  end)

  after_each(function()
    local m = mounted()
    if m == "" then H.rm(root) end -- never rm -rf through a bind-mounted /dev
    assert.are.equal("", m)
  end)

  root_it("should rebuild each kernel's image, remove the backup and report", function()
    local report = rebuild.run(ctx, { gen }, opts { jobs = 1 })
    assert.is_true(report.ok, report.error)
    assert.is_nil(report.error)
    assert.are.equal(2, #report.rebuilt)
    for i, k in ipairs(KERNELS) do
      local e = report.rebuilt[i]
      local img = root .. image_of(k)
      assert.are.equal(k, e.kernel)
      assert.are.equal("booster", e.generator)
      assert.are.same({ "booster", "build", "--force", "--kernel-version", k, image_of(k) }, e.command)
      assert.are.equal(0, e.status)
      assert.is_nil(e.signal)
      assert.is_false(e.timed_out)
      assert.is_number(e.seconds)
      assert.are.equal(image_of(k), e.image)
      assert.are.equal(#old[k], e.size_before)
      local new = assert(H.readfile(img))
      assert.are_not.equal(old[k], new)
      assert.are.equal(#new, e.size_after)
      assert.is_true(e.ok)
      assert.is_nil(e.error)
      assert.is_nil(H.readfile(img .. ".vfioinit-prev"))
      local ok, missing = verify(root)(gen, k, image_of(k))
      assert.is_true(ok, table.concat(missing, ","))
    end
    assert.are.equal("build --force --kernel-version 6.1.0-test /boot/booster-6.1.0-test.img\n"
      .. "build --force --kernel-version 6.2.0-test /boot/booster-6.2.0-test.img\n",
      H.readfile(root .. "/var/log/standin-booster.argv"))
    assert.is_true(lines_of(table.concat(output, "\n"))["booster: done"])
    assert.matches("booster 6.1.0%-test: building", logs[1])
    assert.matches("booster 6.1.0%-test: done in [%d.]+ s", logs[2])
  end)

  root_it("should build an image that did not exist before", function()
    H.sh("rm " .. H.q(root .. image_of(KERNELS[1])))
    local report = rebuild.run(ctx, { gen }, opts { kernels = { KERNELS[1] } })
    assert.is_true(report.ok, report.error)
    local e = report.rebuilt[1]
    assert.is_nil(e.size_before)
    assert.is_true(e.size_after > 0)
    assert.is_true(verify(root)(gen, KERNELS[1], image_of(KERNELS[1])))
  end)

  root_it("should keep the previous image byte for byte when the command fails", function()
    set_mode("fail")
    local report = rebuild.run(ctx, { gen }, opts { jobs = 1 })
    assert.is_false(report.ok)
    assert.are.equal(2, #report.rebuilt)
    for _, e in ipairs(report.rebuilt) do
      assert.is_false(e.ok)
      assert.are.equal(1, e.status)
      assert.are.equal(old[e.kernel], H.readfile(root .. e.image))
      assert.is_nil(H.readfile(root .. e.image .. ".vfioinit-prev"))
      assert.are.equal(#old[e.kernel], e.size_before)
      assert.are.equal(#old[e.kernel], e.size_after)
      assert.matches("exited with status 1", e.error)
      assert.matches("last 20 lines of output", e.error)
      assert.matches("restored", e.error)
      -- the last 20 of 31 lines: 30 numbered stdout lines and one stderr line
      local l = lines_of(e.error)
      assert.is_true(l["standin line 30"] and l["standin line 12"] and l["standin: fatal error"] or false, e.error)
      assert.is_nil(l["standin line 10"])
      assert.is_nil(l["standin line 1"])
    end
    assert.are.equal(report.rebuilt[1].error, report.error)
    assert.matches("booster 6.1.0%-test: failed in", logs[2])
  end)

  root_it("should kill a command that times out and keep the previous image", function()
    set_mode("sleep")
    local report = rebuild.run(ctx, { gen }, opts { kernels = { KERNELS[1] }, timeout = 0.5 })
    assert.is_false(report.ok)
    local e = report.rebuilt[1]
    assert.is_true(e.timed_out)
    assert.is_nil(e.status)
    assert.matches("timed out", e.error)
    assert.matches("standin: sleeping", e.error, 1, true)
    assert.are.equal(old[e.kernel], H.readfile(root .. e.image))
    assert.is_nil(H.readfile(root .. e.image .. ".vfioinit-prev"))
    assert.are.equal("", mounted())
    -- nothing of the stand-in is left running chrooted in root (zombies have no root)
    assert.are.equal("", (H.sh("find /proc/[0-9]*/root -maxdepth 0 -lname " .. H.q(root) .. " 2>/dev/null")))
  end)

  root_it("should restore the previous image when the new one does not verify", function()
    set_mode("novfio")
    local report = rebuild.run(ctx, { gen }, opts { kernels = { KERNELS[2] } })
    assert.is_false(report.ok)
    local e = report.rebuilt[1]
    assert.are.equal(0, e.status)
    assert.is_false(e.ok)
    assert.are.same({ "vfio", "vfio_iommu_type1", "vfio-pci" }, e.missing)
    assert.matches("does not verify", e.error)
    assert.matches("image lacks vfio, vfio_iommu_type1, vfio-pci", e.error, 1, true)
    assert.matches("booster: done", e.error)
    assert.are.equal(old[e.kernel], H.readfile(root .. e.image))
    assert.is_nil(H.readfile(root .. e.image .. ".vfioinit-prev"))
  end)

  root_it("should restore the previous image when verify errors", function()
    local report = rebuild.run(ctx, { gen }, opts {
      kernels = { KERNELS[1] },
      verify = function() return nil, "cannot read the image" end,
    })
    assert.is_false(report.ok)
    assert.matches("cannot read the image", report.error)
    assert.are.equal(old[KERNELS[1]], H.readfile(root .. image_of(KERNELS[1])))
  end)

  root_it("should say when the generator's command is missing in root", function()
    H.sh("rm " .. H.q(root .. "/usr/bin/booster"))
    local report = rebuild.run(ctx, { gen }, opts())
    assert.is_false(report.ok)
    assert.are.equal("booster: command not found in " .. root, report.error)
    for _, e in ipairs(report.rebuilt) do
      assert.are.equal("booster: command not found in " .. root, e.error)
      assert.are.equal(old[e.kernel], H.readfile(root .. e.image))
      assert.is_nil(H.readfile(root .. e.image .. ".vfioinit-prev"))
      assert.is_nil(e.status)
    end
  end)

  root_it("should accept an image reached through a symlink and keep the link", function()
    local k = KERNELS[1]
    H.sh("cd " .. H.q(root .. "/boot") .. " && mv booster-" .. k .. ".img real-" .. k .. ".img && ln -s real-" .. k .. ".img booster-" .. k .. ".img")
    set_mode("fail")
    local report = rebuild.run(ctx, { gen }, opts { kernels = { k } })
    assert.is_false(report.ok)
    -- the stand-in wrote through the link; the previous content went back to the target
    assert.are.equal("real-" .. k .. ".img", H.sh("readlink " .. H.q(root .. image_of(k))):gsub("%s+$", ""))
    assert.are.equal(old[k], H.readfile(root .. "/boot/real-" .. k .. ".img"))
  end)

  root_it("should put the previous image back and re-raise when on_output raises", function()
    set_mode("fail")
    local ok, err = pcall(rebuild.run, ctx, { gen }, opts {
      kernels = { KERNELS[1] },
      on_output = function(line) if line == "standin line 3" then error("stop here", 0) end end,
    })
    assert.is_false(ok)
    assert.are.equal("stop here", err)
    assert.are.equal(old[KERNELS[1]], H.readfile(root .. image_of(KERNELS[1])))
    assert.is_nil(H.readfile(root .. image_of(KERNELS[1]) .. ".vfioinit-prev"))
  end)

  root_it("should run the booster generator's own command", function()
    local booster = require "vfioinit.generators.booster"
    local context = require "vfioinit.context"
    local c = context.new { root = root, kernels = { KERNELS[1] } }
    local report = rebuild.run(c, { booster }, opts { kernels = { KERNELS[1] } })
    assert.is_true(report.ok, report.error)
    assert.are.equal("build --force --kernel-version 6.1.0-test /boot/booster-6.1.0-test.img\n",
      H.readfile(root .. "/var/log/standin-booster.argv"))
    assert.are.equal("booster", report.rebuilt[1].generator)
  end)

  it("should report a generator whose rebuild_argv fails", function()
    local bad = setmetatable({ rebuild_argv = function() return nil, "no preset for 6.1" end, name = "mkinitcpio" },
      { __index = gen })
    local report = rebuild.run({ root = root, kernels = { "6.1" } }, { bad }, { kernels = { "6.1" } })
    assert.is_false(report.ok)
    assert.are.equal("mkinitcpio: no preset for 6.1", report.error)
  end)

  it("should raise on misuse", function()
    assert.has_error(function() rebuild.run(nil, { gen }) end)
    assert.has_error(function() rebuild.run({ root = "/" }, nil) end)
    assert.has_error(function() rebuild.run({ root = "/" }, { gen }, "x") end)
  end)
end)
