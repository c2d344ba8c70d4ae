-- A killed vfioinit leaves no generator running (issue item 8), and the next run under the
-- lock settles the `<image>.vfioinit-prev` it left. The generator is a stand-in script in a
-- busybox chroot that forks writers, one of which leaves the process group (setsid).
local core = require "vfioinit.core"
local rebuild = require "vfioinit.rebuild"
local H = require "helpers"

local q = H.q
local busybox = H.static_busybox()
local root_it = H.chroot_it(it, pending)
local KVER = "6.1.0-test"
local IMAGE = "/boot/booster-" .. KVER .. ".img"

local pids_of, wait_until = H.pids_of, H.wait_until

-- A previous image: a real newc archive.
local function old_image(root)
  H.sh(("d=$(mktemp -d) && echo old > $d/old && (cd $d && echo old | cpio -o -H newc --quiet) > %s && rm -rf $d")
    :format(q(root .. IMAGE)))
  return assert(H.readfile(root .. IMAGE))
end

local function busybox_root()
  local root = H.tmpdir()
  H.sh("mkdir -p " .. q(root) .. "/bin " .. q(root) .. "/usr/bin " .. q(root) .. "/boot " .. q(root) .. "/tmp")
  if busybox then
    H.sh("cp " .. q(busybox) .. " " .. q(root .. "/bin/busybox"))
    H.sh("cd " .. q(root .. "/bin") .. " && for a in sh sleep setsid echo; do ln -s busybox $a; done")
  end
  return root
end

local function gen_for(argv)
  return {
    name = "booster", command = "booster",
    image_path = function() return IMAGE end,
    -- without argv: no command, the run only settles leftovers
    rebuild_argv = function() return argv and { { argv = argv, kernels = { KVER } } } or {} end,
  }
end

describe("a vfioinit killed during a rebuild", function()
  local root, token, driver_pid
  before_each(function()
    root = busybox_root()
    token = "vfioinit-orphan-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
  end)
  -- only the processes this spec started, by id
  after_each(function() H.end_driver(token, driver_pid, root) end)

  root_it("takes its generator and everything it started with it, and the next run restores the image", function()
    local old = old_image(root)
    -- the stand-in: a writer in its group, one that left it (setsid), and itself looping
    H.writefile(root .. "/usr/bin/booster", ([[#!/bin/sh
( while :; do echo x >> %s; sleep 0.1; done ) &
setsid sh -c 'while :; do echo y >> %s; sleep 0.1; done # %s' &
while :; do sleep 1; done
]]):format(IMAGE, IMAGE, token), 493)
    local driver = root .. ".driver.lua"
    finally(function() os.remove(driver) end)
    H.writefile(driver, ([[
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./%s/?.so;" .. package.cpath
local rebuild = require "vfioinit.rebuild"
local gen = { name = "booster", command = "booster", image_path = function() return %q end,
  rebuild_argv = function() return { { argv = { "booster", %q }, kernels = { %q } } } end }
rebuild.run({ root = %q, kernels = { %q } }, { gen }, { timeout = 300 })
]]):format(os.getenv("VFIOINIT_BUILD") or "build", IMAGE, token, KVER, root, KVER))
    driver_pid = H.sh("cd " .. q(H.project) .. " && (" .. H.lua .. " " .. q(driver) .. " >/dev/null 2>&1 & echo $!)"):match("%d+")
    assert.truthy(driver_pid)
    -- the generator and both writers are running, and the image grows
    assert.is_true(wait_until(function() return #pids_of(token) >= 3 end, 10), "the stand-in did not start")
    assert.is_true(wait_until(function() return #(H.readfile(root .. IMAGE) or "") > #old end, 5))
    assert.truthy(H.readfile(root .. IMAGE .. ".vfioinit-prev"))

    H.sh("kill -9 " .. driver_pid)
    local gone = wait_until(function() return #pids_of(token) == 0 end, 5)
    if not gone then
      error("generator processes outlived vfioinit:\n" .. H.sh("env -u LD_PRELOAD ps -o pid,ppid,pgid,stat,args -p " .. table.concat(pids_of(token), ",")))
    end
    local size = #H.readfile(root .. IMAGE)
    H.sh("sleep 0.5")
    assert.are.equal(size, #H.readfile(root .. IMAGE), "the image still changes")

    -- the next run under the lock puts the previous image back and says so
    local logs = {}
    local report = rebuild.run({ root = root, kernels = { KVER } }, { gen_for(nil) }, {
      log = function(m) logs[#logs + 1] = m end })
    assert.are.equal(1, #report.leftovers)
    assert.are.equal("restored", report.leftovers[1].action)
    assert.are.equal(IMAGE .. ".vfioinit-prev", report.leftovers[1].path)
    assert.are.equal(old, H.readfile(root .. IMAGE))
    assert.is_nil(H.readfile(root .. IMAGE .. ".vfioinit-prev"))
    assert.are.equal(("restored %s from booster-%s.img.vfioinit-prev (an earlier run was interrupted)"):format(IMAGE, KVER), logs[1])
  end)
end)

describe("a leftover <image>.vfioinit-prev", function()
  local root
  before_each(function() root = busybox_root() end)
  after_each(function() H.rm(root) end)

  local function settle()
    local logs = {}
    local report = rebuild.run({ root = root, kernels = { KVER } }, { gen_for(nil) },
      { log = function(m) logs[#logs + 1] = m end })
    return report.leftovers, logs
  end

  it("is removed when the image is a readable initramfs", function()
    local new = old_image(root)
    H.writefile(root .. IMAGE .. ".vfioinit-prev", "older bytes")
    local left, logs = settle()
    assert.are.equal("removed", left[1].action)
    assert.are.equal(new, H.readfile(root .. IMAGE))
    assert.is_nil(H.readfile(root .. IMAGE .. ".vfioinit-prev"))
    assert.are.equal("removed leftover " .. IMAGE .. ".vfioinit-prev", logs[1])
  end)

  for _, case in ipairs({
    { "missing", function() end },
    { "empty", function(r) H.writefile(r .. IMAGE, "") end },
    { "not an initramfs", function(r) H.writefile(r .. IMAGE, "half-written junk") end },
  }) do
    it("is put back when the image is " .. case[1], function()
      local prev = old_image(root)
      H.sh("mv " .. q(root .. IMAGE) .. " " .. q(root .. IMAGE .. ".vfioinit-prev"))
      case[2](root)
      local left = settle()
      assert.are.equal("restored", left[1].action)
      assert.are.equal(prev, H.readfile(root .. IMAGE))
      assert.is_nil(H.readfile(root .. IMAGE .. ".vfioinit-prev"))
    end)
  end

  it("is settled by apply under the lock and reported in its JSON", function()
    local r = H.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio", "/usr/lib/kernel/install.d/50-mkinitcpio.install" } })
    finally(function() H.rm(r) end)
    local kver = H.install_kernel(r, "cloud")
    local img = "/boot/initramfs-" .. kver .. ".img"
    H.writefile(r .. img .. ".vfioinit-prev", "previous image bytes")
    local out = H.sh(H.project .. "/bin/vfioinit --root " .. q(r) .. " --json apply --no-rebuild 2>/dev/null")
    local got = H.sh("python3 -c " .. q("import json,sys; d=json.loads(sys.stdin.read()); l=d['leftovers'][0]; print(l['action'], l['path'])")
      .. " <<'EOF'\n" .. out .. "\nEOF")
    assert.are.equal("restored " .. img .. ".vfioinit-prev\n", got)
    assert.are.equal("previous image bytes", H.readfile(r .. img))
    assert.is_nil(core.fs.stat(r, img .. ".vfioinit-prev"))
  end)
end)
