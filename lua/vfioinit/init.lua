--- vfioinit: make sure the VFIO modules are inside every initramfs, so vfio-pci
-- claims a passthrough device before its native driver does.
-- Public contract: docs/CONTRACT.md; choices documented in README.md.
-- Expected failures return nil, message; misuse (wrong argument types) raises.
-- Each function below is one run (lua/vfioinit/run.lua) through the stages of
-- lua/vfioinit/pipeline.lua; this file only binds them to an instance's registry.
local core = require "vfioinit.core"
local detect = require "vfioinit.detect"
local kernel = require "vfioinit.kernel"
local planner = require "vfioinit.plan"
local state = require "vfioinit.state"
local runs = require "vfioinit.run"
local pipeline = require "vfioinit.pipeline"
local generators = require "vfioinit.generators"

-- Argument types (raise at the API caller) and root; nil, err for a bad root.
local function checkopts(opts, fname)
  opts = runs.check_types(opts, fname, 3)
  local ok, err = runs.check_root(opts)
  if not ok then return nil, err end
  return opts
end

-- Operations that take root's lock refuse a malformed VFIOINIT_LOCK_TIMEOUT up front.
local function lock_env_error() return state.LOCK_TIMEOUT_ERROR end

local OPTIONAL = { config = "string", active_evidence = "table", distro_default = "table",
  image_want = "table", early_modules = "function", edit_text = "function" }

-- A generator spec's fields, checked when it is registered: a wrong type would only
-- fail later, deep inside detect or verify.
local function check_generator(spec)
  local function bad(what) error("bad argument #1 to 'register_generator' (" .. what .. ")", 4) end
  if type(spec) ~= "table" then bad("table expected") end
  for _, f in ipairs({ "name", "command" }) do
    if type(spec[f]) ~= "string" then bad(("field '%s': string expected"):format(f)) end
  end
  for _, f in ipairs({ "edits", "image_path", "rebuild_argv" }) do
    if type(spec[f]) ~= "function" then bad(("field '%s': function expected"):format(f)) end
  end
  for f, t in pairs(OPTIONAL) do
    if spec[f] ~= nil and type(spec[f]) ~= t then
      bad(("field '%s': %s expected, got %s"):format(f, t, type(spec[f])))
    end
  end
end

-- register_generator, generator, generator_names: the instance's generators.
local function bind_registry(M, registry)
  --- Add a generator (see docs/INTERNALS.md "Generator interface").
  function M.register_generator(spec)
    check_generator(spec)
    return registry:register(spec)
  end
  function M.generator(name) return registry:get(name) end
  --- generator_names() -> names of every generator this instance knows: the built-ins, then registered ones.
  function M.generator_names() return registry:names() end
end

-- detect, modules, drivers_for: facts about root, no run needed beyond them.
local function bind_facts(M, registry)
  --- detect{root=} -> inventory | nil, err
  function M.detect(opts)
    local o, err = checkopts(opts, "detect")
    if not o then return nil, err end
    return detect.detect(o.root or "/", registry)
  end
  local function per_kernel(fname, fn)
    return function(opts)
      local o, err = checkopts(opts, fname)
      if not o then return nil, err end
      if type(o.kernel) ~= "string" then error(("bad argument #1 to '%s' (field 'kernel': string expected)"):format(fname), 2) end
      return fn(o)
    end
  end
  --- modules{root=, kernel=} -> list of {name=, state=, path=}
  M.modules = per_kernel("modules", kernel.modules)
  --- drivers_for{root=, kernel=, ids=} -> list of {id=, modules=}
  M.drivers_for = per_kernel("drivers_for", kernel.drivers_for)
end

-- revert{root=, force=false, dry_run=false} -> true, list | nil, err, refused
-- Restores each file vfioinit changed to its first original (removes the ones it
-- created) when it still holds exactly what vfioinit last wrote; otherwise refuses,
-- changing nothing, with one line per file (`refused` = {{path=, reason=}...}). `force`
-- keeps such a file's current content as PATH.vfioinit-edited, then restores. list:
-- {path=, action="restored"|"removed"|"unchanged", kept=, before=, after=}; with
-- `dry_run` nothing is written (before/after give the diff revert would make).
-- `list.regenerated`: the regeneration commands run because a GRUB file was restored.
local function revert(opts)
  local o, oerr = checkopts(opts, "revert")
  if not o then return nil, oerr end
  if lock_env_error() then return nil, lock_env_error() end
  local root = o.root or "/"
  local ropts = { force = o.force and true or false, dry_run = o.dry_run and true or false }
  local list, err, refused
  if ropts.dry_run then list, err, refused = state.revert(root, ropts)
  else list, err, refused = state.with_lock(root, state.revert, root, ropts) end
  if not list then return nil, err, refused end
  if not ropts.dry_run then
    -- a restored GRUB config regenerates grub.cfg, as apply did (list.regenerated)
    local regen = require("vfioinit.bootloaders").after_revert(root, list, { timeout = o.timeout })
    if #regen > 0 then list.regenerated = regen end
    for _, e in ipairs(regen) do
      if not e.ok then return nil, e.error end
    end
  end
  return true, list
end

-- update_initramfs{root=, dry_run=, rebuild=, verify=, log=, ...plan options} -> report
-- (pipeline.report's shape, always a table). Plan, apply and rebuild run under one lock:
-- a concurrent run plans on what this one wrote.
local function update_initramfs(registry)
  return function(opts)
    local root = type(opts) == "table" and type(opts.root) == "string" and opts.root or "/"
    local o, err = checkopts(opts, "update_initramfs")
    if o and not o.dry_run then err = lock_env_error() end
    local report
    if not err and o.dry_run then return pipeline.update(o, registry) end
    if not err then report, err = state.with_lock(root, pipeline.update, o, registry) end
    if report then return report end
    report = pipeline.report(root)
    report.error = err
    return report
  end
end

-- plan, verify, rebuild, update_initramfs, status, revert: runs through the pipeline.
local function bind_pipeline(M, registry)
  --- plan{root=, generators=, modules=, kernels=, ids=, softdeps=} -> plan | nil, err
  function M.plan(opts)
    local o, err = checkopts(opts, "plan")
    if not o then return nil, err end
    return planner.plan(o, registry)
  end
  --- verify{root=, kernels=, generators=, modules=} -> list of {kernel=, image=, ok=, missing=}
  function M.verify(opts)
    local o, err = checkopts(opts, "verify")
    if not o then return nil, err end
    return pipeline.verify_all(o, registry)
  end
  --- rebuild{root=, generators=, kernels=, on_output=, timeout=, log=} -> report | nil, err, partial
  function M.rebuild(opts)
    local o, err = checkopts(opts, "rebuild")
    if not o then return nil, err end
    if lock_env_error() then return nil, lock_env_error() end
    return state.with_lock(o.root or "/", pipeline.rebuild_all, o, registry)
  end
  --- status{root=, generators=, kernels=, modules=, ids=, softdeps=} -> status | nil, err
  function M.status(opts)
    local o, err = checkopts(opts, "status")
    if not o then return nil, err end
    return pipeline.status(o, registry)
  end
  M.update_initramfs = update_initramfs(registry)
  M.revert = revert
end

---------------------------------------------------------------------------
-- Seed-compatible names (thin wrappers; see CONTRACT.md)
local function bind_seed(M)
  function M.detect_initramfs_systems(opts)
    local inv, err = M.detect(opts)
    if not inv then return nil, err end
    local set = {}
    for _, g in ipairs(inv.generators) do if g.installed then set[g.name] = true end end
    return set
  end

  local function ensure(gen_name)
    return function(modules, opts)
      opts = opts or {}
      if modules ~= nil and type(modules) ~= "table" then
        error("bad argument #1 (table of module names expected)", 2)
      end
      -- an explicit list replaces the VFIO set: exactly those names
      local plan, err = M.plan({ root = opts.root, generators = { gen_name }, modules = modules,
        exact_modules = modules ~= nil })
      if not plan then return nil, err end
      if opts.dry_run then return true, plan end
      local ok, aerr = plan:apply({ backup = true })
      if not ok then return nil, aerr end
      return true, plan
    end
  end
  M.ensure_mkinitcpio_modules = ensure("mkinitcpio")
  M.ensure_dracut_modules = ensure("dracut")
  M.ensure_booster_modules = ensure("booster")
  M.ensure_initramfs_modules_debian = ensure("initramfs-tools")

end

local function new()
  local M = { _VERSION = "vfioinit " .. core._VERSION }
  local registry = generators.new()
  bind_registry(M, registry)
  bind_facts(M, registry)
  bind_pipeline(M, registry)
  bind_seed(M)
  M.policy = require("vfioinit.policy").bind(M)  -- per-distribution composition; policies load on demand
  M.new = new
  return M
end

return new()
