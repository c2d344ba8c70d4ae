--- vfioinit.policy: per-distribution composition over vfioinit's public API.
--
--   local vfioinit = require "vfioinit"
--   local p = vfioinit.policy{ name = "mine", match = { "debian" }, modules = { "kvmgt" },
--                              rebuild = false, log = io.stderr }
--   local report = assert(p:run{ root = "/mnt/target" })  -- vfioinit.update_initramfs
--   local policy, why = vfioinit.policy.for_root("/mnt/target")   -- from os-release
--
-- A policy is data: the options of update_initramfs (which generators, nil: the
-- detected one; extra modules, device IDs, devices, cmdline, which kernels: a list, or a
-- function of the installed ones; rebuild and verify yes/no, ...), a log sink, and
-- generators to register first.
--
-- match: the os-release IDs the policy is chosen for by policy.for_root, e.g.
-- `match = { "debian", "ubuntu" }`: os-release `ID` is tried first, then each `ID_LIKE`
-- value in order; the policy matching the earliest wins. A policy without `match` is
-- never chosen from os-release (only by name: `for_root(root, { name = "mine" })`),
-- however it is registered; shipped policies get theirs from machine.FAMILIES. Shipped
-- policies live in lua/vfioinit/policies/<name>.lua and use only the public API; load()
-- gives them their `match` list from the distributions table (vfioinit.machine.FAMILIES).
--
-- Overriding a shipped policy (see docs/REFERENCE.md "Extending and composing"):
--   * vfioinit.policy.register(p): `p` replaces the policy of the same name (or adds
--     a new one) for this vfioinit instance; registered policies are matched first,
--     the last registered first;
--   * vfioinit.policy.for_root(root, { name = "fedora" }) skips os-release matching;
--   * a file `vfioinit/policies/<name>.lua` earlier on package.path shadows ours.
-- Nothing here is global: each vfioinit instance (vfioinit.new()) has its own set.
local machine = require("vfioinit.machine")
local options = require("vfioinit.options")

local M = {}

M.SHIPPED = { "arch", "fedora", "debian", "opensuse" }  -- each a machine.FAMILIES `policy`

-- A policy takes the fields of the call it wraps (vfioinit.update_initramfs; its `plan`
-- the same minus the run's own), but `root` (given when it runs) and `match`, which is the
-- policy's: the os-release IDs it is chosen for (a device pattern goes in the call,
-- `p:run{match=...}`). `kernels` may be a function of the installed ones, `log` a sink.
local OWN = { name = "string", description = "string", match = "table", extra_generators = "table" }
local TYPES = { kernels = "table|function", log = "function|userdata|table" }
for k, t in pairs(OWN) do TYPES[k] = t end

-- The options a policy passes on to vfioinit.plan / update_initramfs as they are.
local PASS = {}
for _, f in ipairs(options.CALLS.update_initramfs) do
  if f ~= "root" and f ~= "match" and f ~= "kernels" and f ~= "log" then PASS[#PASS + 1] = f end
end
local FIELDS = { "kernels", "log" }
for _, f in ipairs(PASS) do FIELDS[#FIELDS + 1] = f end
for f in pairs(OWN) do FIELDS[#FIELDS + 1] = f end

-- What a call (p:run, p:plan, p:options) takes: update_initramfs' fields, with the
-- policy's kinds of `kernels` and `log`.
local CALL = { fields = options.CALLS.update_initramfs, types = TYPES }

local function check(spec, fname, level)
  if spec == nil then error(("bad argument #1 to '%s' (table expected, got nil)"):format(fname), level + 1) end
  options.check(spec, fname, level + 1, { fields = FIELDS, types = TYPES })
  return spec  -- not a tail call, nor below: error levels count the frames
end

-- A log sink: a function, or anything with :write (io.stderr, a file) -> function.
local function sink(log)
  if log == nil or type(log) == "function" then return log end
  return function(msg) log:write(msg, "\n") end
end

local add_run

-- The policy class of one vfioinit instance (its methods call that instance's `api`):
-- returns the metatable and new(spec, level) -> policy.
local function class(api)
  local Policy = {}
  Policy.__index = Policy

  local function new(spec, level)
    check(spec, "policy", level + 1)
    local p = {}
    for k, v in pairs(spec) do p[k] = v end
    p.name = p.name or "custom"
    p.match = p.match or {}
    return setmetatable(p, Policy)
  end

  --- p:extend(over) -> a new policy: `over`'s fields replace p's (lists too).
  function Policy:extend(over)
    check(over, "extend", 2)
    local t = {}
    for k, v in pairs(self) do t[k] = v end
    for k, v in pairs(over) do t[k] = v end
    return new(t, 2)
  end

  --- p:matches(distro) -> rank (1: ID, 2..: position in ID_LIKE + 1) | nil
  function Policy:matches(distro) return machine.rank(distro, self.match) end

  add_run(Policy, api)
  return Policy, new
end

-- The methods that run a policy through the instance's `api`: options, plan, run.
add_run = function(Policy, api)
  -- Register the policy's own generators with this instance (idempotent).
  local function register_generators(self)
    for _, g in ipairs(self.extra_generators or {}) do api.register_generator(g) end
  end

  -- The kernels option: a list as given, or what a function of the installed ones returns.
  local function kernels_of(self, root, kernels)
    if type(kernels) ~= "function" then return kernels end
    local inv, err = api.detect({ root = root })
    if not inv then return nil, err end
    kernels = kernels(inv.kernels, inv)
    if type(kernels) ~= "table" then
      return nil, ("policy %s: kernels function returned %s, expected a list"):format(self.name, type(kernels))
    end
    return kernels
  end

  -- The options of a call `fname` (its fields checked: update_initramfs'), the policy's
  -- under them.
  local function options_of(self, opts, fname)
    opts = options.check(opts, fname, 3, CALL)
    local o = {}
    for _, k in ipairs(PASS) do o[k] = self[k] end
    o.log = sink(self.log)
    for k, v in pairs(opts) do o[k] = v end
    if opts.log ~= nil then o.log = sink(opts.log) end
    o.root = opts.root or "/"
    local kernels, err = kernels_of(self, o.root, opts.kernels or self.kernels)
    if err then return nil, err end
    o.kernels = kernels
    return o
  end

  --- p:options(opts) -> the option table p gives vfioinit.update_initramfs for `opts`
  -- (root= and any field given at call time wins over the policy's) | nil, err
  function Policy:options(opts)
    local o, err = options_of(self, opts, "options")  -- not a tail call: misuse is blamed on our caller
    return o, err
  end

  --- p:plan(opts) -> plan | nil, err (vfioinit.plan with the policy's choices; the fields
  -- only a run uses stay out)
  function Policy:plan(opts)
    register_generators(self)
    local o, err = options_of(self, opts, "plan")
    if not o then return nil, err end
    local po = {}
    for _, f in ipairs(options.CALLS.plan) do po[f] = o[f] end
    return api.plan(po)
  end

  --- p:run(opts) -> report | nil, err, report (vfioinit.update_initramfs with the
  -- policy's choices; report.policy names the policy)
  function Policy:run(opts)
    register_generators(self)
    local o, err = options_of(self, opts, "run")
    if not o then
      return nil, err, { root = opts and opts.root or "/", ok = false, error = err, policy = self.name }
    end
    if o.log then o.log(("policy %s: %s"):format(self.name, o.dry_run and "dry run" or "run")) end
    local report, rerr, partial = api.update_initramfs(o)
    ;(report or partial).policy = self.name
    return report, rerr, partial
  end
end

-- The policy of `candidates` whose match ranks best for `distro` (the first of a tie),
-- and why; policy.default when none matches.
local function best_match(P, candidates, d)
  local best, rank
  for _, p in ipairs(candidates) do
    local r = p:matches(d)
    if r and (not rank or r < rank) then best, rank = p, r end
  end
  if not best then
    return P.default, ("no policy matches os-release ID=%s"):format(tostring(d.id))
  end
  if rank == 1 then return best, "os-release ID=" .. d.id end
  return best, "os-release ID_LIKE=" .. d.id_like[rank - 1]
end

-- policy.load of one instance: `registered` (name -> policy) first, then the files.
local function loader(P, registered, new)
  --- policy.load(name) -> policy | nil, err: a registered one, else the shipped file
  -- (any module `vfioinit.policies.<name>` on package.path).
  return function(name)
    if type(name) ~= "string" then
      error(("bad argument #1 to 'load' (string expected, got %s)"):format(type(name)), 2)
    end
    if registered[name] then return registered[name] end
    if not name:match("^[%w_-]+$") then return nil, ("invalid policy name %q"):format(name) end
    local ok, mod = pcall(require, "vfioinit.policies." .. name)
    if not ok then
      if tostring(mod):find("module 'vfioinit.policies." .. name .. "' not found", 1, true) then
        return nil, ("unknown policy %q (known: %s)"):format(name, table.concat(P.names(), ", "))
      end
      return nil, tostring(mod)
    end
    -- a shipped file builds its policy with require("vfioinit").policy; rebind it here.
    -- Without a match list of its own it matches the distributions machine.FAMILIES
    -- gives this policy name (how the shipped ones get theirs).
    local spec = {}
    for k, v in pairs(mod) do spec[k] = v end
    if #spec.match == 0 then spec.match = machine.ids("policy", name) end
    return new(spec, 2)
  end
end

--- bind(api) -> the `vfioinit.policy` namespace of one vfioinit instance.
function M.bind(api)
  local P = { SHIPPED = M.SHIPPED }
  local registered, order = {}, {}
  local Policy, new = class(api)

  setmetatable(P, { __call = function(_, spec) local p = new(spec, 2); return p end })

  --- policy.register(p) -> p: use `p` for its name from now on (this instance only).
  function P.register(p)
    if getmetatable(p) ~= Policy then p = new(p, 2) end
    if not registered[p.name] then order[#order + 1] = p.name end
    registered[p.name] = p
    return p
  end

  P.load = loader(P, registered, new)

  --- policy.names() -> shipped names, then registered ones
  function P.names()
    local t, seen = {}, {}
    for _, n in ipairs(M.SHIPPED) do t[#t + 1] = n; seen[n] = true end
    for _, n in ipairs(order) do if not seen[n] then t[#t + 1] = n end end
    return t
  end

  --- The policy used when no other matches: the detected generator, defaults for the rest.
  P.default = new({ name = "default", description = "any distribution: the detected generator" }, 1)

  -- Registered policies (the last registered first), then the shipped ones not overridden.
  local function candidates()
    local list = {}
    for i = #order, 1, -1 do list[#list + 1] = registered[order[i]] end
    for _, n in ipairs(M.SHIPPED) do
      if not registered[n] then
        local p, lerr = P.load(n)
        if not p then return nil, lerr end
        list[#list + 1] = p
      end
    end
    return list
  end

  --- policy.for_root(root, {name=}) -> policy, reason | nil, err
  -- Matches os-release ID, then each ID_LIKE in order, against registered policies
  -- first (the last registered wins a tie), then the shipped ones; `name` picks one
  -- outright. No match: policy.default.
  function P.for_root(root, opts)
    if type(root) ~= "string" then
      error(("bad argument #1 to 'for_root' (string expected, got %s)"):format(type(root)), 2)
    end
    opts = options.check(opts, "for_root", 2, { fields = { "name" }, types = { name = "string" }, arg = 2 })
    if opts.name then
      local p, err = P.load(opts.name)
      if not p then return nil, err end
      return p, "chosen by name"
    end
    local inv, err = api.detect({ root = root })
    if not inv then return nil, err end
    local list, lerr = candidates()
    if not list then return nil, lerr end
    return best_match(P, list, inv.distro)
  end

  return P
end

return M
