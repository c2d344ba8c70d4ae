-- One lock per root (core.lock.acquire, src/lock.c: flock on root's own directory) serialises
-- apply, revert and rebuild: concurrent applies never lose an edit, and a second run
-- waits for the first, or fails clearly when VFIOINIT_LOCK_TIMEOUT runs out.
local h = require "helpers"
local core = require "vfioinit.core"

local q, sh = h.q, h.sh
local BIN = h.project .. "/bin/vfioinit"
local build = os.getenv("VFIOINIT_BUILD") or "build"

-- Applies of different extra modules accumulate in mkinitcpio, initramfs-tools and booster
-- configs (run one after another, every module is there), so run concurrently they must too.
local all_root = h.all_root

local function now()
  return tonumber((sh("date +%s.%N")))
end

-- Start a lua5.4 that holds root's lock for `secs` seconds; returns once it holds it.
local function hold_lock(root, secs, flag)
  local script = ("package.cpath = %q .. package.cpath; local core = require 'vfioinit.core'; "
    .. "local lk = assert(core.lock.acquire(%q, '/')); io.open(%q, 'w'):close(); os.execute('sleep %s'); lk:unlock()")
    :format(h.project .. "/" .. build .. "/?.so;", root, flag, secs)
  sh("lua5.4 -e " .. q(script) .. " >/dev/null 2>&1 &")
  for _ = 1, 500 do
    if h.readfile(flag) then return end
    sh("sleep 0.01")
  end
  error("the lock holder did not start")
end

describe("core.lock.acquire()", function()
  local r
  before_each(function() r = h.tmpdir() end)
  after_each(function() h.rm(r) end)

  it("locks root exclusively until :unlock(), creating nothing inside root", function()
    local before = h.tree_hash(r)
    local lk = assert(core.lock.acquire(r, "/"))
    assert.is.userdata(lk)
    assert.truthy(tostring(lk):find("held", 1, true))
    local again, err, code = core.lock.acquire(r, "/", 0)
    assert.is_nil(again)
    assert.truthy(err:find("locked by another process", 1, true), err)
    assert.are.equal(11, code)  -- EWOULDBLOCK
    lk:unlock()
    lk:unlock()  -- idempotent
    assert.truthy(tostring(lk):find("released", 1, true))
    local lk2 = assert(core.lock.acquire(r, "/", 0))
    lk2:unlock()
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("releases on __close and __gc", function()
    do
      local lk <close> = assert(core.lock.acquire(r, "/"))
      assert.is_nil(core.lock.acquire(r, "/", 0))
    end
    assert.is.userdata(assert(core.lock.acquire(r, "/", 0)))  -- left to __gc
    collectgarbage(); collectgarbage()
    local lk = assert(core.lock.acquire(r, "/", 0))
    lk:unlock()
  end)

  it("waits up to the timeout for another process, then fails clearly", function()
    local flag = r .. ".flag"
    finally(function() os.remove(flag) end)
    hold_lock(r, 1, flag)
    local t0 = now()
    local lk, err = core.lock.acquire(r, "/", 0.3)
    local waited = now() - t0
    assert.is_nil(lk)
    assert.truthy(err:match("^/: locked by another process %(waited 0%.3"), err)
    assert.is_true(waited >= 0.29 and waited < 0.9, tostring(waited))
    lk = assert(core.lock.acquire(r, "/", 10))  -- the holder lets go after 1 s
    assert.is_true(now() - t0 >= 0.9)
    lk:unlock()
  end)

  it("locks a file inside root (created when missing), resolving symlinks inside root", function()
    h.sh("ln -s /lockfile " .. q(r .. "/link"))
    local lk = assert(core.lock.acquire(r, "/link"))
    assert.is_not_nil(h.readfile(r .. "/lockfile"))  -- the link's target inside root
    lk:unlock()
    local nope, err = core.lock.acquire(r, "/no/such/dir/lock", 0)
    assert.is_nil(nope)
    assert.truthy(err:find("No such file", 1, true), err)
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() core.lock.acquire() end)
    assert.has_error(function() core.lock.acquire(r) end)
    assert.has_error(function() core.lock.acquire(r, "relative") end)
    assert.has_error(function() core.lock.acquire(r, "/", -1) end)
    assert.has_error(function() core.lock.acquire("", "/") end)
  end)
end)

describe("apply, revert and rebuild under the lock", function()
  it("lets concurrent applies of different modules all land: no edit is lost", function()
    local mods = { "moda", "modb", "modc", "modd", "mode", "modf" }
    for round = 1, 3 do
      local r = all_root()
      local cmds = {}
      for i, m in ipairs(mods) do
        cmds[i] = ("VFIOINIT_BUILD=%s %s --root %s --module %s apply --no-rebuild >%s 2>&1 & "):format(
          build, q(BIN), q(r), m, q(r .. ".out" .. i))
      end
      sh(table.concat(cmds) .. "wait")
      for i = 1, #mods do
        local out = h.readfile(r .. ".out" .. i) or ""
        os.remove(r .. ".out" .. i)
        assert.truthy(out:find("applied", 1, true) or out == "" or not out:find("vfioinit: /", 1, true), out)
      end
      local mk = h.bash_array({ r .. "/etc/mkinitcpio.conf" }, "MODULES")
      local it_mods = h.readfile(r .. "/etc/initramfs-tools/modules")
      local booster = h.readfile(r .. "/etc/booster.yaml")
      local dracut = h.sh("cat " .. q(r) .. "/etc/dracut.conf.d/*.conf")
      for _, m in ipairs(mods) do
        local found = false
        for _, x in ipairs(mk) do if x == m then found = true end end
        assert.is_true(found, ("round %d: %s lost from mkinitcpio MODULES: %s"):format(round, m, table.concat(mk, " ")))
        assert.truthy(it_mods:find("\n" .. m .. "\n", 1, true), ("round %d: %s lost from initramfs-tools"):format(round, m))
        assert.truthy(booster:find(m, 1, true), ("round %d: %s lost from booster.yaml"):format(round, m))
      end
      -- dracut's drop-in is vfioinit's own file, rewritten whole for the modules asked for:
      -- sequential applies leave the last one's list, so must concurrent ones
      local last = dracut:match('force_drivers%+=" vfio vfio_iommu_type1 vfio_pci (%w+) "')
      assert.truthy(last, dracut)
      local known = false
      for _, m in ipairs(mods) do if m == last then known = true end end
      assert.is_true(known, dracut)
      -- and revert still restores every original
      local _, ok = sh(("VFIOINIT_BUILD=%s %s --root %s revert >/dev/null 2>&1"):format(build, q(BIN), q(r)))
      assert.is_true(ok)
      for _, p in ipairs({ "/etc/mkinitcpio.conf", "/etc/initramfs-tools/modules", "/etc/booster.yaml" }) do
        assert.are.equal(h.readfile(h.corpus .. "/" .. ({ ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf",
          ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules", ["/etc/booster.yaml"] = "booster/booster.yaml" })[p]),
          h.readfile(r .. p), p)
      end
      h.rm(r)
    end
  end)

  it("makes a second apply wait for the first; with a short VFIOINIT_LOCK_TIMEOUT it fails clearly, writing nothing", function()
    local r = all_root()
    local flag = r .. ".flag"
    finally(function() h.rm(r); os.remove(flag) end)
    local before = h.tree_hash(r)
    hold_lock(r, 1.5, flag)
    local out = sh(("VFIOINIT_LOCK_TIMEOUT=0.2 VFIOINIT_BUILD=%s %s --root %s apply --no-rebuild 2>&1; echo rc=$?"):format(build, q(BIN), q(r)))
    assert.truthy(out:find("rc=1", 1, true), out)
    assert.truthy(out:find("another vfioinit is running on this root", 1, true), out)
    assert.truthy(out:find("locked by another process", 1, true), out)
    assert.are.equal(before, h.tree_hash(r))
    -- revert and rebuild too
    out = sh(("VFIOINIT_LOCK_TIMEOUT=0.2 VFIOINIT_BUILD=%s %s --root %s revert 2>&1; echo rc=$?"):format(build, q(BIN), q(r)))
    assert.truthy(out:find("rc=1", 1, true) and out:find("locked by another process", 1, true), out)
    out = sh(("VFIOINIT_LOCK_TIMEOUT=0.2 VFIOINIT_BUILD=%s %s --root %s rebuild 2>&1; echo rc=$?"):format(build, q(BIN), q(r)))
    assert.truthy(out:find("rc=1", 1, true) and out:find("locked by another process", 1, true), out)
    -- the default waits until the holder lets go, then applies
    out = sh(("VFIOINIT_BUILD=%s %s --root %s apply --no-rebuild 2>&1; echo rc=$?"):format(build, q(BIN), q(r)))
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.truthy(h.readfile(r .. "/var/lib/vfioinit/manifest"))
  end)
end)
