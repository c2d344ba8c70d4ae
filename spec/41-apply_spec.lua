-- Fault injection and kill -9 on a multi-file apply (mkinitcpio + dracut + initramfs-tools
-- + booster configs from spec/fixtures/corpus, plus the modprobe.d file from ids): each trial
-- runs the apply in a child lua5.4 on a fresh copy of the root, then checks that every
-- config is byte-identical to its before or its after state, that no `*.vfioinit-*` temp
-- file is left, that a second apply completes the job, and that `revert` restores every
-- original (and removes the created files and the state directory).
--
-- Faults use src/fs.c's hook (VFIOINIT_FAULT="write:N,fsync:N,rename:N": the Nth such call
-- inside one core call fails). To aim it at one core call of the apply, a small LD_PRELOAD
-- shim (compiled here) hands the variable only to the Kth core fs call of the process
-- (fs.c reads it once per call); the same shim kills the child with SIGKILL at the Kth call,
-- after a random delay of 0..400 µs (a timer), so kills land inside writes, fsyncs and
-- renames. Some more trials kill the child from outside (kill -9) after a random delay.
--
-- Trial counts: VFIOINIT_FAULT_KILLS (shim kills, default 150) and VFIOINIT_FAULT_EXTERNAL
-- (outside kill -9, default 30); e.g. VFIOINIT_FAULT_KILLS=1000 VFIOINIT_FAULT_EXTERNAL=300
-- for the long run. VFIOINIT_FAULT_SEED fixes the random points.
local h = require "helpers"
local vfioinit = require "vfioinit"

local q, sh = h.q, h.sh
local build = os.getenv("VFIOINIT_BUILD") or "build"
local KILLS = tonumber(os.getenv("VFIOINIT_FAULT_KILLS") or "150")
local EXTERNAL = tonumber(os.getenv("VFIOINIT_FAULT_EXTERNAL") or "30")
local SEED = tonumber(os.getenv("VFIOINIT_FAULT_SEED") or tostring(os.time()))
local IDS = { "1af4:1000" }

local SHIM = [[
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
extern char **environ;
static long calls;
static const char *env_of(const char *name)
{
	size_t n = strlen(name);
	for (char **e = environ; e != NULL && *e != NULL; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}
static void die(int sig) { (void)sig; kill(getpid(), SIGKILL); }
char *getenv(const char *name)
{
	if (strcmp(name, "VFIOINIT_FAULT") == 0) {  /* read once per core fs call */
		const char *at = env_of("SHIM_FAULT_AT"), *kat = env_of("SHIM_KILL_AT");
		calls++;
		if (kat != NULL && atol(kat) == calls) {
			const char *us = env_of("SHIM_KILL_US");
			long u = us != NULL ? atol(us) : 0;
			struct itimerval it;
			if (u <= 0)
				kill(getpid(), SIGKILL);
			memset(&it, 0, sizeof it);
			it.it_value.tv_sec = u / 1000000;
			it.it_value.tv_usec = u % 1000000;
			signal(SIGALRM, die);
			setitimer(ITIMER_REAL, &it, NULL);
		}
		if (at != NULL)
			return atol(at) == calls ? (char *)env_of("VFIOINIT_FAULT") : NULL;
	}
	return (char *)env_of(name);
}
]]

-- The child: plan + apply; with a log file it records every core fs call (1:1 with the
-- shim's count) and where apply starts. Exit 0 applied, 3 apply failed (message on stderr).
local DRIVER = [[
local project, build, root, log = ...
package.path = project .. "/lua/?.lua;" .. project .. "/lua/?/init.lua;" .. package.path
package.cpath = project .. "/" .. build .. "/?.so;" .. package.cpath
local core = require "vfioinit.core"
local f = log and log ~= "" and assert(io.open(log, "w"))
if f then
  local n = 0
  for _, name in ipairs({ "copy", "dir", "mkdirs", "read", "remove", "rename", "resolve", "stat", "write_atomic" }) do
    local real = core.fs[name]
    core.fs[name] = function(...) n = n + 1; f:write(n, " ", name, "\n"); f:flush(); return real(...) end
  end
  core._count = function() return n end
end
local vfioinit = require "vfioinit"
local plan = assert(vfioinit.plan({ root = root, ids = { "1af4:1000" } }))
if f then f:write("apply ", core._count(), "\n"); f:flush() end
local ok, err = plan:apply({ backup = true })
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(3) end
os.exit(0)
]]

local MUTATING = { copy = true, mkdirs = true, remove = true, rename = true, write_atomic = true }

local all_root = h.all_root

local work, template, shim, driver, changes
local function preload()
  local cur = os.getenv("LD_PRELOAD")
  return (cur and cur ~= "") and (cur .. ":" .. shim) or shim
end

local function fresh(name)
  local r = work .. "/" .. name
  sh("rm -rf " .. q(r) .. " && cp -a " .. q(template) .. " " .. q(r))
  return r
end

-- Run the child on root r with extra env "K=V ..."; returns exit code (or 128+signal), stderr.
local function child(r, env, log)
  local out, _, code = sh(("cd %s && env %s LD_PRELOAD=%s lua5.4 %s %s %s %s %s 2>&1; echo \"rc=$?\""):format(
    q(h.project), env or "", q(preload()), q(driver), q(h.project), q(build), q(r), q(log or "")))
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, out:gsub("rc=%d+%s*$", ""), code
end

-- The invariants after any trial; returns nil or a message. stats counts final states.
-- `killed`: a SIGKILL between creating a temp file and renaming it leaves the temp behind
-- (no process is left to remove it); the next apply (or revert) must sweep it.
local function check(r, stats, killed)
  local n_after = 0
  for _, c in ipairs(changes) do
    local cur = h.readfile(r .. c.path)
    if cur == c.after then n_after = n_after + 1
    elseif cur ~= c.before then return c.path .. ": neither its before nor its after content" end
  end
  if stats then
    if n_after == 0 then stats.none = stats.none + 1
    elseif n_after == #changes then stats.all = stats.all + 1
    else stats.partial = stats.partial + 1 end
  end
  local left = sh("find " .. q(r) .. " -name '*.vfioinit-*'")
  if left ~= "" then
    if not killed then return "temp files left: " .. left end
    stats.temps = (stats.temps or 0) + 1
  end
  -- a second apply completes the job...
  local plan, perr = vfioinit.plan({ root = r, ids = IDS })
  if not plan then return "plan after the trial: " .. tostring(perr) end
  local ok, aerr = plan:apply({ backup = true })
  if not ok then return "apply after the trial: " .. tostring(aerr) end
  for _, c in ipairs(changes) do
    if h.readfile(r .. c.path) ~= c.after then return c.path .. ": not in its after state after a second apply" end
  end
  left = sh("find " .. q(r) .. " -name '*.vfioinit-*'")
  if left ~= "" then return "temp files left after a second apply: " .. left end
  -- ...and revert restores every original, removes created files and the state dir
  local rok, rerr = vfioinit.revert({ root = r })
  if not rok then return "revert: " .. tostring(rerr) end
  for _, c in ipairs(changes) do
    if h.readfile(r .. c.path) ~= c.before then return c.path .. ": not restored by revert" end
  end
  if h.readfile(r .. "/var/lib/vfioinit/manifest") or sh("ls -A " .. q(r .. "/var/lib") .. " 2>/dev/null") ~= "" then
    return "revert left state behind: " .. sh("find " .. q(r .. "/var/lib"))
  end
  return nil
end

describe("apply under faults and kill -9", function()
  local calls, apply_at  -- the no-fault run's core fs calls, and the first one of apply

  setup(function()
    work = h.tmpdir()
    template = all_root()
    shim = work .. "/faultshim.so"
    h.writefile(work .. "/faultshim.c", SHIM)
    local out, ok = sh(("cc -O1 -shared -fPIC -o %s %s 2>&1"):format(q(shim), q(work .. "/faultshim.c")))
    assert(ok, out)
    driver = work .. "/driver.lua"
    h.writefile(driver, DRIVER)
    local plan = assert(vfioinit.plan({ root = template, ids = IDS }))
    changes = plan.changes
    -- the count run
    local r = fresh("count")
    local rc, msg = child(r, "", work .. "/count.log")
    assert(rc == 0, msg)
    calls = {}
    for l in io.lines(work .. "/count.log") do
      local k, name = l:match("^(%d+) (%S+)$")
      if k then calls[tonumber(k)] = name end
      local a = l:match("^apply (%d+)$")
      if a then apply_at = tonumber(a) + 1 end
    end
    h.rm(r)
    math.randomseed(SEED)
  end)

  teardown(function()
    if work then h.rm(work) end
    if template then h.rm(template) end
  end)

  it("applies every change in the no-fault run (the baseline the trials compare with)", function()
    assert.is_true(#changes >= 5)
    assert.is_true(apply_at ~= nil and #calls >= apply_at)
  end)

  it("keeps every config before-or-after, leaves no temp file and reverts, for a fault at every step", function()
    local trials, failed_applies = 0, 0
    local stats = { none = 0, all = 0, partial = 0 }
    for k = apply_at, #calls do
      if MUTATING[calls[k]] then
        for _, fault in ipairs({ "write:1", "fsync:1", "rename:1", "fsync:2" }) do
          local r = fresh("fault")
          local rc, msg = child(r, ("SHIM_FAULT_AT=%d VFIOINIT_FAULT=%s"):format(k, fault))
          local where = ("fault %s at call %d (%s)"):format(fault, k, calls[k])
          assert(rc == 0 or rc == 3, where .. ": child exit " .. tostring(rc) .. ": " .. msg)
          if rc == 3 then failed_applies = failed_applies + 1 end
          local err = check(r, stats)
          assert(err == nil, where .. ": " .. tostring(err))
          trials = trials + 1
        end
      end
    end
    h.rm(work .. "/fault")
    io.stderr:write(("\n[41-apply] %d fault trials (%d core fs calls in apply, %d failed applies); "
      .. "final states: %d all-before, %d all-after, %d mixed\n"):format(trials, #calls - apply_at + 1,
      failed_applies, stats.none, stats.all, stats.partial))
    assert.is_true(failed_applies > 0)
  end)

  it(("keeps the invariants when the child is SIGKILLed at random points (%d + %d trials)"):format(KILLS, EXTERNAL), function()
    local stats = { none = 0, all = 0, partial = 0 }
    local killed = 0
    for i = 1, KILLS do
      local k = math.random(apply_at, #calls)
      local us = math.random(0, 3) == 0 and 0 or math.random(1, 400)
      local r = fresh("kill")
      local rc, msg = child(r, ("SHIM_KILL_AT=%d SHIM_KILL_US=%d"):format(k, us))
      local where = ("trial %d: kill at call %d (%s) + %d us (seed %d)"):format(i, k, calls[k], us, SEED)
      assert(rc == 0 or rc == 137, where .. ": child exit " .. tostring(rc) .. ": " .. msg)
      if rc == 137 then killed = killed + 1 end
      local err = check(r, stats, rc == 137)
      assert(err == nil, where .. ": " .. tostring(err))
    end
    -- from outside: start the child, kill -9 it after a random delay (its whole run is a few
    -- tens of ms; most delays land in startup or plan, some in apply)
    local t = tonumber((sh(("cd %s && s=$(date +%%s%%N); LD_PRELOAD=%s lua5.4 %s %s %s %s >/dev/null 2>&1; echo $(( ($(date +%%s%%N) - s) / 1000 ))")
      :format(q(h.project), q(preload()), q(driver), q(h.project), q(build), q(fresh("ext"))))))
    local ext_killed = 0
    for i = 1, EXTERNAL do
      local r = fresh("ext")
      local delay = math.random(0, t) / 1e6
      local out = sh(("cd %s && { LD_PRELOAD=%s lua5.4 %s %s %s %s >/dev/null 2>&1 & p=$!; sleep %.6f; kill -9 $p 2>/dev/null; wait $p; echo rc=$?; } 2>/dev/null")
        :format(q(h.project), q(preload()), q(driver), q(h.project), q(build), q(r), delay))
      local rc = tonumber(out:match("rc=(%d+)"))
      assert(rc == 0 or rc == 137, ("external trial %d: child exit %s"):format(i, tostring(rc)))
      if rc == 137 then ext_killed = ext_killed + 1 end
      local err = check(r, stats, rc == 137)
      assert(err == nil, ("external trial %d (delay %.6f s): %s"):format(i, delay, tostring(err)))
    end
    h.rm(work .. "/kill"); h.rm(work .. "/ext")
    io.stderr:write(("\n[41-apply] %d shim-timed SIGKILL trials (%d killed), %d external kill -9 trials "
      .. "(%d killed, child run %d us); final states: %d all-before, %d all-after, %d mixed; "
      .. "%d left a temp file (swept by the next apply); seed %d\n")
      :format(KILLS, killed, EXTERNAL, ext_killed, t, stats.none, stats.all, stats.partial, stats.temps or 0, SEED))
    assert.is_true(killed > 0)
  end)
end)

-- Every apply is recorded: revert must be able to undo whatever apply wrote, so no option
-- turns the record off (plan:apply{backup=false} once wrote with no record, and revert
-- then reported success having undone nothing).
describe("plan:apply's record", function()
  it("cannot be turned off: backup=false is misuse, and revert undoes every apply", function()
    local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local conf = h.readfile(r .. "/etc/mkinitcpio.conf")
    local plan = assert(vfioinit.plan({ root = r, ids = IDS }))
    assert.has_error(function() plan:apply({ backup = false }) end,
      "bad argument #1 to 'apply' (field 'backup': true (revert undoes what every apply recorded) expected, got boolean)")
    assert.are.equal(before, h.tree_hash(r))
    assert.is_true(plan:apply({ backup = true }))
    assert.are_not.equal(conf, h.readfile(r .. "/etc/mkinitcpio.conf"))
    local ok, list = vfioinit.revert({ root = r })
    assert.is_true(ok, list)
    local acts = {}
    for _, e in ipairs(list) do acts[e.path] = e.action end
    assert.are.equal("restored", acts["/etc/mkinitcpio.conf"])
    assert.are.equal("removed", acts["/etc/modprobe.d/vfioinit.conf"])
    assert.are.equal(conf, h.readfile(r .. "/etc/mkinitcpio.conf"))
    assert.is_nil(h.readfile(r .. "/etc/modprobe.d/vfioinit.conf"))
    -- the same through update_initramfs and a policy
    assert.has_error(function() vfioinit.update_initramfs({ root = r, backup = false }) end)
    assert.has_error(function() vfioinit.policy({ backup = false }) end)
  end)
end)
