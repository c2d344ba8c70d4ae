--- vfioinit: make sure the VFIO modules are inside every initramfs, so vfio-pci
-- claims a passthrough device before its native driver does.
-- Public contract: ../shared/CONTRACT.md; choices documented in README.md.
-- Expected failures return nil, message; misuse (wrong argument types) raises.
local core = require "vfioinit.core"
local util = require "vfioinit.util"
local detect = require "vfioinit.detect"
local kernel = require "vfioinit.kernel"
local planner = require "vfioinit.plan"
local state = require "vfioinit.state"
local context = require "vfioinit.context"
local generators = require "vfioinit.generators"
local modprobe = require "vfioinit.modprobe"

local function checkopts(opts, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  if opts.root ~= nil and type(opts.root) ~= "string" then
    error(("bad argument #1 to '%s' (field 'root': string expected, got %s)"):format(fname, type(opts.root)), 3)
  end
  for _, f in ipairs({ "generators", "kernels", "modules" }) do
    if opts[f] ~= nil and type(opts[f]) ~= "table" then
      error(("bad argument #1 to '%s' (field '%s': table expected, got %s)"):format(fname, f, type(opts[f])), 3)
    end
  end
  -- a missing root would otherwise surface much later, e.g. as a lock failure
  if opts.root ~= nil then
    local ok, why = util.check_root(opts.root)
    if not ok then return nil, ("root %s: %s"):format(opts.root == "" and "''" or opts.root, why) end
  end
  return opts
end

-- Operations that take root's lock refuse a malformed VFIOINIT_LOCK_TIMEOUT up front.
local function lock_env_error() return state.LOCK_TIMEOUT_ERROR end

-- Each selected kernel must be installed in root; repeats are dropped.
local function check_kernels(inv, kernels, root)
  kernels = util.unique(kernels)
  for _, k in ipairs(kernels or {}) do
    if type(k) ~= "string" or not inv.kernel_dirs[k] then
      return nil, ("/lib/modules/%s: no such kernel in %s"):format(tostring(k), root)
    end
  end
  return kernels or inv.kernels
end

local function new()
  local M = { _VERSION = "vfioinit " .. core._VERSION }
  local registry = generators.new()

  --- Add a generator (see docs/INTERNALS.md "Generator interface").
  function M.register_generator(spec)
    if type(spec) ~= "table" then error("bad argument #1 to 'register_generator' (table expected)", 2) end
    for _, f in ipairs({ "name", "command" }) do
      if type(spec[f]) ~= "string" then error(("bad argument #1 to 'register_generator' (field '%s': string expected)"):format(f), 2) end
    end
    for _, f in ipairs({ "edits", "image_path", "rebuild_argv" }) do
      if type(spec[f]) ~= "function" then error(("bad argument #1 to 'register_generator' (field '%s': function expected)"):format(f), 2) end
    end
    -- optional fields: a wrong type would only fail later, deep inside detect or verify
    for f, t in pairs({ config = "string", active_evidence = "table", distro_default = "table",
                        image_want = "table", early_modules = "function", edit_text = "function" }) do
      if spec[f] ~= nil and type(spec[f]) ~= t then
        error(("bad argument #1 to 'register_generator' (field '%s': %s expected, got %s)"):format(f, t, type(spec[f])), 2)
      end
    end
    return registry:register(spec)
  end

  function M.generator(name) return registry:get(name) end

  --- generator_names() -> names of every generator this instance knows: the built-ins, then registered ones.
  function M.generator_names() return registry:names() end

  --- detect{root=} -> inventory | nil, err
  function M.detect(opts)
    local err
    opts, err = checkopts(opts, "detect")
    if not opts then return nil, err end
    return detect.detect(opts.root or "/", registry)
  end

  --- modules{root=, kernel=} -> list of {name=, state=, path=}
  function M.modules(opts)
    local err
    opts, err = checkopts(opts, "modules")
    if not opts then return nil, err end
    if type(opts.kernel) ~= "string" then error("bad argument #1 to 'modules' (field 'kernel': string expected)", 2) end
    return kernel.modules(opts)
  end

  --- drivers_for{root=, kernel=, ids=} -> list of {id=, modules=}
  function M.drivers_for(opts)
    local err
    opts, err = checkopts(opts, "drivers_for")
    if not opts then return nil, err end
    if type(opts.kernel) ~= "string" then error("bad argument #1 to 'drivers_for' (field 'kernel': string expected)", 2) end
    return kernel.drivers_for(opts)
  end

  --- plan{root=, generators=, modules=, kernels=, ids=, softdeps=} -> plan | nil, err
  function M.plan(opts)
    local err
    opts, err = checkopts(opts, "plan")
    if not opts then return nil, err end
    return planner.plan(opts, registry)
  end

  --- revert{root=, force=false, dry_run=false} -> true, list | nil, err, refused
  -- Restores each file vfioinit changed to its first original (removes the ones it
  -- created) when it still holds exactly what vfioinit last wrote; otherwise refuses,
  -- changing nothing, with one line per file (`refused` = {{path=, reason=}...}). `force`
  -- keeps such a file's current content as PATH.vfioinit-edited, then restores. list:
  -- {path=, action="restored"|"removed"|"unchanged", kept=, before=, after=}; with
  -- `dry_run` nothing is written (before/after give the diff revert would make).
  function M.revert(opts)
    local oerr
    opts, oerr = checkopts(opts, "revert")
    if not opts then return nil, oerr end
    if lock_env_error() then return nil, lock_env_error() end
    local root = opts.root or "/"
    local ropts = { force = opts.force and true or false, dry_run = opts.dry_run and true or false }
    local list, err, refused
    if ropts.dry_run then list, err, refused = state.revert(root, ropts)
    else list, err, refused = state.with_lock(root, state.revert, root, ropts) end
    if not list then return nil, err, refused end
    return true, list
  end

  -- The generators and kernels an operation acts on, checked before anything runs:
  -- unknown kernels and image paths a generator cannot name are errors, repeats dropped.
  local function targets(root, names, kernels)
    local inv, err = detect.detect(root, registry)
    if not inv then return nil, err end
    local list, gerr = planner.select_generators(inv, registry, names)
    if not list then return nil, gerr end
    local ks, kerr = check_kernels(inv, kernels, root)
    if not ks then return nil, kerr end
    local ctx = context.new({ root = root, distro = inv.distro, kernels = ks })
    for _, g in ipairs(list) do
      for _, k in ipairs(ks) do
        local path, perr = g.image_path(ctx, k)
        if not path then return nil, perr or (g.name .. ": no image path for kernel " .. k) end
      end
    end
    return list, inv, ks
  end

  local function make_ctx(root, inv, kernels)
    local ctx = context.new({ root = root, distro = inv.distro, kernels = kernels or inv.kernels })
    if core.fs.stat(root, modprobe.FILE) then ctx.modprobe_file = modprobe.FILE end
    return ctx
  end

  local function verify_one(ctx, gen, kver, extra)
    local verify = require "vfioinit.verify"
    local mp = ctx.modprobe_file and core.fs.read(ctx.root, modprobe.FILE) or nil
    return verify.check(ctx, gen, kver, { modules = extra, modprobe_content = mp })
  end

  --- verify{root=, kernels=, generators=} -> list of {kernel=, image=, ok=, missing=}
  function M.verify(opts)
    local oerr
    opts, oerr = checkopts(opts, "verify")
    if not opts then return nil, oerr end
    local root = opts.root or "/"
    local gens, inv, kernels = targets(root, opts.generators, opts.kernels)
    if not gens then return nil, inv end
    local extra, merr = util.check_modules(opts.modules)
    if not extra then return nil, merr end
    extra = util.unique(extra)
    local ctx = make_ctx(root, inv, kernels)
    local out = {}
    for _, g in ipairs(gens) do
      for _, k in ipairs(kernels) do out[#out + 1] = verify_one(ctx, g, k, extra) end
    end
    return out
  end

  local rebuild_locked  -- the body, run under root's lock (below)
  --- rebuild{root=, generators=, kernels=, on_output=, timeout=} -> report | nil, err
  function M.rebuild(opts)
    local oerr
    opts, oerr = checkopts(opts, "rebuild")
    if not opts then return nil, oerr end
    if lock_env_error() then return nil, lock_env_error() end
    return state.with_lock(opts.root or "/", rebuild_locked, opts)
  end
  function rebuild_locked(opts)
    local root = opts.root or "/"
    local gens, inv, kernels = targets(root, opts.generators, opts.kernels)
    if not gens then return nil, inv end
    local ctx = make_ctx(root, inv, kernels)
    local rebuild = require "vfioinit.rebuild"
    -- An image must carry the VFIO modules only when its generator's config asks for them
    -- (nothing left to plan); after `revert` a rebuild just has to produce an image.
    local configured = {}
    for _, g in ipairs(gens) do
      local p = planner.plan({ root = root, generators = { g.name }, kernels = kernels, modules = opts.modules }, registry)
      configured[g.name] = p ~= nil and #p.changes == 0
    end
    local report = rebuild.run(ctx, gens, {
      kernels = kernels, on_output = opts.on_output, timeout = opts.timeout, log = opts.log,
      verify = opts.verify ~= false and function(gen, kver)
        if not configured[gen.name] then
          local path = gen.image_path(ctx, kver)
          local st = path and core.fs.stat(root, path)
          if st and st.size > 0 then return true end
          return false, { "image" }
        end
        local r = verify_one(ctx, gen, kver, opts.modules)
        -- update_initramfs hands its per-run cache in, so the image is not read again
        if opts.verified_cache then opts.verified_cache[gen.name .. "\0" .. kver] = r end
        return r.ok, r.missing
      end or nil,
    })
    if report.ok == false then return nil, report.error, report end
    return report
  end

  local update_locked  -- the body, run under root's lock (below)
  --- update_initramfs{root=, dry_run=, rebuild=, verify=, log=, ...plan options}
  -- detect -> plan -> apply -> rebuild (stale kernels only) -> verify; returns a report.
  function M.update_initramfs(opts)
    local root = type(opts) == "table" and opts.root or "/"
    local oerr
    opts, oerr = checkopts(opts, "update_initramfs")
    if opts and not opts.dry_run then oerr = lock_env_error() end
    if oerr then
      return { root = root, dry_run = false, ok = false, error = oerr, changes = {}, rebuilt = {}, verified = {} }
    end
    if opts.dry_run then return update_locked(opts) end
    -- plan, apply and rebuild under one lock: a concurrent run plans on what this one wrote
    local report, err = state.with_lock(opts.root or "/", update_locked, opts)
    if not report then
      return { root = opts.root or "/", dry_run = false, ok = false, error = err, changes = {}, rebuilt = {}, verified = {} }
    end
    return report
  end
  function update_locked(opts)
    local root = opts.root or "/"
    local log = opts.log or function() end
    local report = { root = root, dry_run = opts.dry_run or false, ok = false, changes = {}, rebuilt = {}, verified = {} }
    local plan, err = M.plan(opts)
    if not plan then report.error = err; return report end
    report.modules = plan.modules
    report.kernels = plan.kernels
    report.generators = {}
    for _, g in ipairs(plan.generators) do report.generators[#report.generators + 1] = g.name end
    report.warnings = plan.warnings
    report.diff = plan:diff()
    local changed_gen = {}
    for _, c in ipairs(plan.changes) do
      report.changes[#report.changes + 1] = { generator = c.generator, path = c.path, new = c.before == nil }
      changed_gen[c.generator] = true
    end
    if report.dry_run then report.ok = true; return report end
    if #plan.changes > 0 then
      log(("applying %d change(s)"):format(#plan.changes))
      local ok, aerr = plan:apply({ backup = opts.backup ~= false })
      if not ok then report.error = aerr; return report end
      report.applied = true
    end
    local ctx = make_ctx(root, plan.inventory, plan.kernels)
    -- an earlier run killed mid-rebuild may have left <image>.vfioinit-prev: settle it first
    report.leftovers = require("vfioinit.rebuild").sweep(ctx, plan.generators, plan.kernels, log)
    -- Each image is read once per run unless it is rebuilt: reading a 13 MB image is most of
    -- a no-op apply's time.
    local checked = {}
    local function check(g, k)
      local key = g.name .. "\0" .. k
      checked[key] = checked[key] or verify_one(ctx, g, k, opts.modules)
      return checked[key]
    end
    if opts.rebuild ~= false then
      -- stale: the generator's config (or the modprobe file) changed, or its image fails verification
      for _, g in ipairs(plan.generators) do
        local stale = {}
        for _, k in ipairs(plan.kernels) do
          if changed_gen[g.name] or changed_gen.modprobe or not check(g, k).ok then
            stale[#stale + 1] = k
            checked[g.name .. "\0" .. k] = nil
          end
        end
        if #stale == 0 then
          log(g.name .. ": every image is up to date; nothing to rebuild")
        else
          local rep, rerr, partial = M.rebuild({ root = root, generators = { g.name }, kernels = stale,
            on_output = opts.on_output, log = log, timeout = opts.timeout, modules = opts.modules,
            verified_cache = checked })
          local r = rep or partial or {}
          for _, k in ipairs(r.kernels or r) do report.rebuilt[#report.rebuilt + 1] = k end
          if not rep then report.error = rerr; return report end
        end
      end
    end
    if opts.verify ~= false then
      local all_ok = true
      report.images_stale = {}
      for _, g in ipairs(plan.generators) do
        for _, k in ipairs(plan.kernels) do
          local v = check(g, k)
          report.verified[#report.verified + 1] = v
          if not v.ok then
            all_ok = false
            -- not rebuilt on request: the image is behind its config, not broken
            if opts.rebuild == false then
              v.stale = true
              report.images_stale[#report.images_stale + 1] = v.image
            end
          end
        end
      end
      if not all_ok and opts.rebuild ~= false then
        report.error = "an image lacks VFIO modules after the rebuild (see verified)"
        return report
      end
      report.images_ok = all_ok
    end
    report.ok = true
    return report
  end

  ---------------------------------------------------------------------------
  -- Seed-compatible names (thin wrappers; see CONTRACT.md)

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

  M.policy = require("vfioinit.policy").bind(M)  -- per-distribution composition; policies load on demand

  M.new = new
  return M
end

return new()
