--[[ vfioinit.options: the option fields each public call takes, and their check.

  options.check(opts, "plan", level) -> opts ({} for nil)

Misuse raises `bad argument #1 to 'plan' (...)` at `level` (as error's): a non-table,
an unknown field, a field of the wrong type, a number of seconds out of range. A
misspelt option is misuse like a wrong type: ignoring it would do something else than
was asked. Internal callers pass fields no user passes (exact_modules of the
seed-compatible ensure_* calls); run.new checks only the types of what it reads.
]]
local util = require("vfioinit.util")

local M = {}

-- field -> accepted types, "|"-separated; "seconds": a number util.seconds takes (> 0);
-- "count": a whole number >= 1; "true": only true (a field kept for callers that pass the one
-- value it may have); "sign": {key=, cert=}, two strings
M.TYPES = {
  root = "string", generators = "table", kernels = "table", modules = "table",
  ids = "table|string", softdeps = "boolean", devices = "table|string", match = "string",
  force = "boolean", cmdline = "boolean", sysfs = "string", full = "boolean",
  dry_run = "boolean", rebuild = "boolean", verify = "boolean", timeout = "seconds", jobs = "count",
  log = "function", on_output = "function", kernel = "string", backup = "true", sign = "sign",
  trial = "boolean", trial_cmdline = "string",
}

local PLAN = { "root", "generators", "kernels", "modules", "ids", "softdeps", "devices", "match",
  "force", "cmdline", "sysfs" }

local function plus(list, more)
  local t = {}
  for _, f in ipairs(list) do t[#t + 1] = f end
  for _, f in ipairs(more) do t[#t + 1] = f end
  return t
end

-- public call -> the fields it takes (docs/CONTRACT.md "Lua API")
M.CALLS = {
  detect = { "root" },
  detect_initramfs_systems = { "root" },
  modules = { "root", "kernel" },
  drivers_for = { "root", "kernel", "ids" },
  plan = PLAN,
  status = plus(PLAN, { "full" }),
  update_initramfs = plus(PLAN, { "full", "dry_run", "rebuild", "verify", "timeout", "jobs", "log",
    "on_output", "backup", "trial", "trial_cmdline", "sign" }),
  commit = { "root", "timeout", "log", "on_output", "sysfs" },
  verify = { "root", "generators", "kernels", "modules", "full", "cmdline", "ids" },
  rebuild = { "root", "generators", "kernels", "timeout", "jobs", "log", "on_output", "sign" },
  boot_chains = { "root", "generators", "kernels" },
  revert = { "root", "force", "dry_run", "timeout" },
  apply = { "backup" },  -- Plan:apply
  ensure = { "root", "dry_run" },  -- the seed-compatible ensure_*_modules
}

local WHY = {
  seconds = "a number of seconds > 0 and at most " .. util.MAX_SECONDS_TEXT,
  count = "a whole number >= 1",
  ["true"] = "true (revert undoes what every apply recorded)",
  sign = "{key=PATH, cert=PATH} (strings, nothing else)",
}

-- Does `v` fit the type spec `want` ("table|string", "seconds", "true")?
local function fits(v, want)
  if want == "seconds" then return type(v) == "number" and util.seconds(v, true) ~= nil end
  if want == "count" then return type(v) == "number" and v >= 1 and v < math.huge and v == math.floor(v) end
  if want == "true" then return v == true end
  if want == "sign" then
    if type(v) ~= "table" or type(v.key) ~= "string" or type(v.cert) ~= "string" then return false end
    for k in pairs(v) do if k ~= "key" and k ~= "cert" then return false end end
    return true
  end
  for t in want:gmatch("[^|]+") do
    if type(v) == t then return true end
  end
  return false
end

local function describe(v)
  return type(v) == "number" and tostring(v) or type(v)
end

--- check(opts, fname, level [, how]) -> opts, or {} for nil. how: `fields` (list; default
-- M.CALLS[fname]), `types` (field -> type spec, over M.TYPES), `arg` (argument number, 1).
function M.check(opts, fname, level, how)
  how = how or {}
  local function misuse(what)
    error(("bad argument #%d to '%s' (%s)"):format(how.arg or 1, fname, what), level + 2)
  end
  if opts == nil then return {} end
  if type(opts) ~= "table" then misuse("table expected, got " .. type(opts)) end
  local takes = {}
  for _, f in ipairs(how.fields or M.CALLS[fname]) do takes[f] = (how.types or {})[f] or M.TYPES[f] end
  for k, v in pairs(opts) do
    local want = takes[k]
    if not want then misuse(("unknown field '%s'"):format(tostring(k))) end
    if not fits(v, want) then
      misuse(("field '%s': %s expected, got %s"):format(k, WHY[want] or want:gsub("|", " or "), describe(v)))
    end
  end
  return opts
end

return M
