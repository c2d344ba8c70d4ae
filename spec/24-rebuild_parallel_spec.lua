-- Rebuilds side by side: independent per-kernel commands run at the same time, at most
-- `jobs` of them; `jobs = 1` runs them one after the other. Every rule of a single rebuild
-- holds for each: the previous image is kept until the new one verifies, a failure is
-- never reported ok, and everything dies with vfioinit. The generator is the booster
-- stand-in (spec/fixtures/standin-booster) in a busybox chroot.
local rebuild = require "vfioinit.rebuild"
local H = require "helpers"

local q = H.q
local STANDIN = H.project .. "/spec/fixtures/standin-booster"
local KERNELS = { "6.1.0-test", "6.2.0-test" }
local APPLETS = "sh cat echo printf mkdir mktemp find cpio mv rm sleep"

local busybox = H.static_busybox()
local root_it = H.chroot_it(it, pending)

local gen, image_of = H.standin_booster()

-- every VFIO module of kver inside the image (the host's cpio reads it)
local function verify(root)
  return function(_, kver, image)
    local out, ok = H.sh("cpio -it --quiet < " .. q(root .. image) .. " 2>&1")
    if not ok then return nil, image .. ": not a cpio archive" end
    local want = "usr/lib/modules/" .. kver .. "/kernel/drivers/vfio/pci/vfio-pci.ko"
    if not out:find(want, 1, true) then return false, { "vfio-pci" } end
    return true
  end
end

local function lines(s)
  local t = {}
  for l in (s or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("rebuild.run() side by side", function()
  local root, ctx, old

  local function set_mode(mode, kver)
    H.writefile(root .. "/etc/standin-booster.mode" .. (kver and ("." .. kver) or ""), mode .. "\n")
  end
  local function opts(extra)
    local o = { kernels = KERNELS, verify = verify(root), timeout = 60 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end
  local function no_backup_left()
    for _, k in ipairs(KERNELS) do assert.is_nil(H.readfile(root .. image_of(k) .. ".vfioinit-prev")) end
  end

  before_each(function()
    root = H.tmpdir()
    if not busybox then return end
    H.sh("mkdir -p " .. q(root) .. "/bin " .. q(root) .. "/usr/bin " .. q(root) .. "/boot " .. q(root) .. "/tmp "
      .. q(root) .. "/etc")
    H.sh("cp " .. q(busybox) .. " " .. q(root .. "/bin/busybox"))
    H.sh("cd " .. q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    H.sh("cp " .. q(STANDIN) .. " " .. q(root .. "/usr/bin/booster"))
    old = {}
    for _, k in ipairs(KERNELS) do
      H.sh(("d=$(mktemp -d) && echo 'old image for %s' > $d/old && (cd $d && echo old | cpio -o -H newc --quiet) > %s && rm -rf $d")
        :format(k, q(root .. image_of(k))))
      old[k] = assert(H.readfile(root .. image_of(k)))
    end
    ctx = { root = root, kernels = KERNELS }
  end)
  after_each(function() H.rm(root) end)

  root_it("runs the kernels' commands at the same time", function()
    -- each stand-in waits until the other one has started: one at a time, the first fails
    set_mode("barrier")
    local report = rebuild.run(ctx, { gen }, opts { jobs = 2 })
    assert.is_true(report.ok, report.error)
    for i, k in ipairs(KERNELS) do
      local e = report.rebuilt[i]
      assert.are.equal(k, e.kernel)  -- entries in command order, whatever ended first
      assert.is_true(e.ok)
      assert.are.equal(0, e.status)
      assert.are_not.equal(old[k], H.readfile(root .. image_of(k)))
      assert.is_true(verify(root)(gen, k, image_of(k)))
    end
    no_backup_left()
  end)

  root_it("runs as many at once as there are CPUs by default", function()
    local cpus = require("vfioinit.core").spawn.cpus()
    assert.is_true(math.type(cpus) == "integer" and cpus >= 1)
    assert.are.equal(cpus, rebuild.default_jobs())
    if cpus < 2 then return end
    set_mode("barrier")
    local report = rebuild.run(ctx, { gen }, opts())
    assert.is_true(report.ok, report.error)
  end)

  root_it("with jobs = 1 runs one command at a time, each settled before the next starts", function()
    set_mode("order")
    local report = rebuild.run(ctx, { gen }, opts { jobs = 1 })
    assert.is_true(report.ok, report.error)
    -- the second command starts after the first ended and its backup went: only its own is kept
    assert.are.same({
      "start 6.1.0-test booster-6.1.0-test.img.vfioinit-prev", "end 6.1.0-test",
      "start 6.2.0-test booster-6.2.0-test.img.vfioinit-prev", "end 6.2.0-test",
    }, lines(H.readfile(root .. "/var/log/standin-booster.order")))
    no_backup_left()
  end)

  root_it("with jobs = 1 a command that cannot wait for another one fails", function()
    -- the control of the first case: the barrier is what proves the commands overlap
    set_mode("barrier")
    local report = rebuild.run(ctx, { gen }, opts { jobs = 1, timeout = 30 })
    assert.is_false(report.ok)
    assert.matches("no other build started within 10 s", report.rebuilt[1].error, 1, true)
  end)

  root_it("reports a failing command as failed and restores its image; the other stands", function()
    set_mode("barrier")
    set_mode("fail", KERNELS[1])
    local report = rebuild.run(ctx, { gen }, opts { jobs = 2 })
    assert.is_false(report.ok)
    local bad, good = report.rebuilt[1], report.rebuilt[2]
    assert.are.equal(KERNELS[1], bad.kernel)
    assert.is_false(bad.ok)
    assert.are.equal(1, bad.status)
    assert.matches("restored", bad.error)
    assert.are.equal(bad.error, report.error)
    assert.are.equal(old[KERNELS[1]], H.readfile(root .. image_of(KERNELS[1])))
    -- the other one ran beside it (it waited for the failing one to start) and verified
    assert.is_true(good.ok, good.error)
    assert.are_not.equal(old[KERNELS[2]], H.readfile(root .. image_of(KERNELS[2])))
    no_backup_left()
  end)

  root_it("restores every image whose new one does not verify", function()
    set_mode("barrier")
    set_mode("novfio", KERNELS[2])
    local report = rebuild.run(ctx, { gen }, opts { jobs = 2 })
    assert.is_false(report.ok)
    assert.is_true(report.rebuilt[1].ok)
    assert.is_false(report.rebuilt[2].ok)
    assert.are.same({ "vfio-pci" }, report.rebuilt[2].missing)
    assert.are.equal(old[KERNELS[2]], H.readfile(root .. image_of(KERNELS[2])))
    no_backup_left()
  end)

  root_it("kills every command and puts every image back when on_output raises", function()
    set_mode("sleep")
    local ok, err = pcall(rebuild.run, ctx, { gen }, opts {
      jobs = 2,
      on_output = function(line) if line == "standin: sleeping" then error("stop here", 0) end end,
    })
    assert.is_false(ok)
    assert.are.equal("stop here", err)
    for _, k in ipairs(KERNELS) do assert.are.equal(old[k], H.readfile(root .. image_of(k))) end
    no_backup_left()
    assert.are.equal("", (H.sh("find /proc/[0-9]*/root -maxdepth 0 -lname " .. q(root) .. " 2>/dev/null")))
  end)

  root_it("times each command out on its own", function()
    set_mode("sleep", KERNELS[1])
    local report = rebuild.run(ctx, { gen }, opts { jobs = 2, timeout = 1 })
    assert.is_true(report.rebuilt[1].timed_out)
    assert.is_false(report.rebuilt[1].ok)
    assert.are.equal(old[KERNELS[1]], H.readfile(root .. image_of(KERNELS[1])))
    assert.is_true(report.rebuilt[2].ok, report.rebuilt[2].error)
    no_backup_left()
  end)

  it("refuses a jobs count that is not a whole number >= 1", function()
    for _, bad in ipairs({ 0, -1, 1.5, "2" }) do
      assert.has_error(function() rebuild.run({ root = "/" }, {}, { jobs = bad }) end)
    end
  end)
end)

describe("a vfioinit killed during rebuilds side by side", function()
  local root, token, driver_pid
  local pids_of, wait_until = H.pids_of, H.wait_until

  before_each(function()
    root = H.tmpdir()
    token = "vfioinit-side-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
    H.sh("mkdir -p " .. q(root) .. "/bin " .. q(root) .. "/usr/bin " .. q(root) .. "/boot")
    if busybox then
      H.sh("cp " .. q(busybox) .. " " .. q(root .. "/bin/busybox"))
      H.sh("cd " .. q(root .. "/bin") .. " && for a in sh sleep echo cpio; do ln -s busybox $a; done")
    end
  end)
  after_each(function() H.end_driver(token, driver_pid, root) end)

  root_it("takes both commands with it, and the next run restores both images", function()
    local old = {}
    for _, k in ipairs(KERNELS) do
      H.sh(("d=$(mktemp -d) && echo %s > $d/old && (cd $d && echo old | cpio -o -H newc --quiet) > %s && rm -rf $d")
        :format(k, q(root .. image_of(k))))
      old[k] = assert(H.readfile(root .. image_of(k)))
    end
    -- each command spoils its image, then runs until killed
    H.writefile(root .. "/usr/bin/booster", [[#!/bin/sh
echo spoilt > "$2"
while :; do sleep 1; done
]], 493)
    local driver = root .. ".driver.lua"
    finally(function() os.remove(driver) end)
    H.writefile(driver, ([[
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./%s/?.so;" .. package.cpath
local rebuild = require "vfioinit.rebuild"
local gen = { name = "booster", command = "booster",
  image_path = function(_, k) return "/boot/booster-" .. k .. ".img" end,
  rebuild_argv = function(_, ks)
    local out = {}
    for _, k in ipairs(ks) do out[#out + 1] = { argv = { "booster", k, "/boot/booster-" .. k .. ".img", %q }, kernels = { k } } end
    return out
  end }
rebuild.run({ root = %q, kernels = { %q, %q } }, { gen }, { timeout = 300, jobs = 2 })
]]):format(os.getenv("VFIOINIT_BUILD") or "build", token, root, KERNELS[1], KERNELS[2]))
    driver_pid = H.sh("cd " .. q(H.project) .. " && (" .. H.lua .. " " .. q(driver) .. " >/dev/null 2>&1 & echo $!)"):match("%d+")
    assert.truthy(driver_pid)
    -- both commands run at once and both images were spoilt
    assert.is_true(wait_until(function() return #pids_of(token) >= 2 end, 10), "the stand-ins did not both start")
    for _, k in ipairs(KERNELS) do
      assert.is_true(wait_until(function() return H.readfile(root .. image_of(k)) == "spoilt\n" end, 5))
      assert.truthy(H.readfile(root .. image_of(k) .. ".vfioinit-prev"))
    end
    H.sh("kill -9 " .. driver_pid)
    assert.is_true(wait_until(function() return #pids_of(token) == 0 end, 5), "a command outlived vfioinit")

    local none = { name = "booster", command = "booster", image_path = gen.image_path,
      rebuild_argv = function() return {} end }
    local report = rebuild.run({ root = root, kernels = KERNELS }, { none }, {})
    assert.are.equal(2, #report.leftovers)
    for _, l in ipairs(report.leftovers) do assert.are.equal("restored", l.action) end
    for _, k in ipairs(KERNELS) do
      assert.are.equal(old[k], H.readfile(root .. image_of(k)))
      assert.is_nil(H.readfile(root .. image_of(k) .. ".vfioinit-prev"))
    end
  end)
end)
