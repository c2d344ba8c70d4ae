--- vfioinit: make sure the VFIO modules are inside every initramfs, so vfio-pci
-- claims a passthrough device before its native driver does.
--
-- The public contract (API, CLI, exit codes, JSON shapes) is docs/CONTRACT.md in the
-- repository (https://github.com/vfioinit/vfioinit/blob/main/docs/CONTRACT.md); the
-- choices it leaves open are in docs/REFERENCE.md. Expected failures return `nil, message[, report]`
-- (`PATH:LINE: reason` where a file is at fault); misuse (a wrong argument type, an
-- unknown option field) raises.
-- Every path is inside `root` (default "/"), symlinks resolved inside root.
-- @module vfioinit
-- @field _VERSION string, "vfioinit X.Y.Z"
-- @field policy the per-distribution policies (see the vfioinit.policy module); callable:
--   `vfioinit.policy{...}` builds one

-- Each function below is one run (lua/vfioinit/run.lua) through the stages of
-- lua/vfioinit/pipeline.lua; this file only binds them to an instance's registry.
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local detect = require("vfioinit.detect")
local kernel = require("vfioinit.kernel")
local planner = util.lazy "vfioinit.plan"
local state = util.lazy "vfioinit.state"
local lock = util.lazy "vfioinit.state.lock"  -- apply and rebuild need only the lock
local runs = require("vfioinit.run")
local pipeline = require("vfioinit.pipeline")
local trial = util.lazy "vfioinit.trial"
local generators = require("vfioinit.generators")
local options = require("vfioinit.options")

-- The option fields and their types (raise at the API caller: lua/vfioinit/options.lua),
-- then root; nil, err for a bad root.
local function checkopts(opts, fname)
  opts = options.check(opts, fname, 3)
  local ok, err = runs.check_root(opts)
  if not ok then return nil, err end
  return opts
end

-- Operations that take root's lock refuse a malformed VFIOINIT_LOCK_TIMEOUT up front.
local function lock_env_error() return lock.LOCK_TIMEOUT_ERROR end

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

  --- Add a generator of one's own, or replace a built-in of the same name, for this instance.
  -- It then takes part in detect, plan, apply, revert, rebuild and verify.
  -- @function register_generator
  -- @tparam table spec the generator (docs/INTERNALS.md "Generator interface"): required
  --   `name` (string), `command` (string), `edits`, `image_path`, `rebuild_argv` (functions);
  --   optional `config`, `active_evidence`, `distro_default`, `image_want`, `early_modules`,
  --   `edit_text`, type-checked here. `rebuild_argv` returns `{{argv={...}, kernels={...}}...}`;
  --   a bare `argv[1]` is looked up on the rebuild's PATH inside root (chrooted when root is
  --   not /): /usr/sbin, /usr/bin, /sbin, /bin; a path with a slash is taken inside root.
  -- @treturn table spec, as registered
  -- @raise a wrong field type (`bad argument #1 to 'register_generator' (...)`)
  function M.register_generator(spec)
    check_generator(spec)
    return registry:register(spec)
  end

  --- The generator of that name: a built-in (loaded on first use) or a registered one.
  -- @function generator
  -- @tparam string name e.g. "dracut"
  -- @treturn[1] table the generator spec
  -- @treturn[2] nil
  -- @treturn[2] string `unknown generator "x" (known: ...)`
  function M.generator(name) return registry:spec(name) end

  --- Names of every generator this instance knows: the built-ins, then registered ones.
  -- @function generator_names
  -- @treturn {string,...} e.g. `{"mkinitcpio", "dracut", "initramfs-tools", "booster"}`
  function M.generator_names() return registry:names() end

  --- Add a boot-loader plugin (what a loader boots and, optionally, how words go on its
  -- command line), or replace a built-in of the same name, for this instance.
  -- @function register_bootloader
  -- @tparam table spec the plugin (docs/INTERNALS.md "Adding a boot loader"): required `name`
  --   (string), `order` (number), and `chains` (function) or `edits`, `detect` (functions) with
  --   `reads` (table); optional `read`, `covers`, `recovery`, `regenerate`, `files`, `undo`,
  --   `revert_argvs`, `unbooted`, `repin`, `stale_images`, `title`, type-checked here
  -- @treturn table spec, as registered
  -- @raise a missing or wrong field (`bad argument #1 to 'register_bootloader' (...)`)
  function M.register_bootloader(spec)
    local p = registry.loaders:register(spec, "register_bootloader", 4)  -- not a tail call: 4 is the caller
    return p
  end

  --- Names of every boot-loader plugin this instance knows, by their declared order.
  -- @function bootloader_names
  -- @tparam[opt] string role `"cmdline"`: the `--cmdline` targets only; `"chains"`: those
  --   that read what boots
  -- @treturn {string,...}
  function M.bootloader_names(role) return registry.loaders:names(role) end
end

-- detect, modules, drivers_for: facts about root, no run needed beyond them.
local function bind_facts(M, registry)

  --- What is installed in root: distribution, kernels, generators and the active one.
  -- @function detect
  -- @tparam[opt] table opts `{root="/"}`
  -- @treturn[1] table inventory: `distro` (`{id=, id_like={...}, version_id=}`), `kernels`
  --   (versions, sorted like `sort -V`), `generators` (`{name=, installed=, active=, command=,
  --   config=, evidence={...}}` each), `active` (name of the first active one, or nil)
  -- @treturn[2] nil
  -- @treturn[2] string message (e.g. `root /x: no such directory`)
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

  --- The VFIO modules of one installed kernel and how it has them (libkmod).
  -- @function modules
  -- @tparam table opts `{root="/", kernel="6.1.0-13-amd64"}`; `kernel` is required
  -- @treturn[1] {table,...} `{name=, state="module"|"builtin"|"missing", path=}` each
  -- @treturn[2] nil
  -- @treturn[2] string message
  M.modules = per_kernel("modules", kernel.modules)

  --- The native driver modules of PCI device IDs in one kernel (libkmod alias lookup).
  -- @function drivers_for
  -- @tparam table opts `{root="/", kernel=KVER, ids={"10de:1b80", ...}}`
  -- @treturn[1] {table,...} `{id=, modules={...}}` each
  -- @treturn[2] nil
  -- @treturn[2] string message
  M.drivers_for = per_kernel("drivers_for", kernel.drivers_for)
end

-- revert: see its doc comment in bind_update. Under the lock, once the checks passed:
-- the leftovers of a killed rebuild are settled first (as apply does), then the files are
-- restored, the commands their restore needs (bootloaders.revert_hooks) running while the
-- manifest names them.
local function revert(registry)
  return function(opts)
    local o, oerr = checkopts(opts, "revert")
    if not o then return nil, oerr end
    if lock_env_error() then return nil, lock_env_error() end
    local root = o.root or "/"
    -- an ostree sysroot: the deployment an apply wrote (lua/vfioinit/ostree.lua)
    local info, ierr = require("vfioinit.ostree").locate(root, "revert")
    if ierr then return nil, ierr end
    if info then root = info.root end
    local ropts = { force = o.force and true or false, dry_run = o.dry_run and true or false }
    -- a pending or failed trial is dropped alone: what was configured before it stays
    local pending, perr = trial.pending(root)
    if pending == nil then return nil, perr end
    if pending then
      local list, err, refused = trial.drop(root, { force = ropts.force, dry_run = ropts.dry_run, timeout = o.timeout })
      if not list then return nil, err, refused end
      return true, list
    end
    if ropts.dry_run then
      local list, err, refused = state.revert(root, ropts)
      if not list then return nil, err, refused end
      return true, list
    end
    local regenerated = {}
    local hooks = require("vfioinit.boot.cmdline").revert_hooks(root, { timeout = o.timeout, ostree = info },
      regenerated, registry.loaders)
    local leftovers
    ropts.undo, ropts.after = hooks.undo, hooks.after
    ropts.begin = function() leftovers = pipeline.settle(root, registry) end
    local list, err, refused = state.with_lock(root, state.revert, root, ropts)
    local done = list or refused and refused.reverted
    if done then
      if #regenerated > 0 then done.regenerated = regenerated end
      if leftovers and #leftovers > 0 then done.leftovers = leftovers end
    end
    if not list then return nil, err, refused end
    return true, list
  end
end

-- update_initramfs: see its doc comment in bind_update. Plan, apply and rebuild run
-- under one lock: a concurrent run plans on what this one wrote. The report, or nil, the
-- error and the report so far.
local function update_initramfs(registry)
  return function(opts)
    local o, err = checkopts(opts, "update_initramfs")
    local root = o and o.root or type(opts) == "table" and type(opts.root) == "string" and opts.root or "/"
    if o and not o.dry_run then err = lock_env_error() end
    local report
    if not err and o.dry_run then report = pipeline.update(o, registry)
    elseif not err then report, err = lock.with_lock(root, pipeline.update, o, registry) end
    if report and report.ok then return report end
    report = report or pipeline.report(root, o and o.dry_run)
    report.error = report.error or err
    return nil, report.error, report
  end
end

-- plan, verify, rebuild, status: runs through the pipeline.
local function bind_pipeline(M, registry)

  --- What apply would change, computed without writing anything.
  -- @function plan
  -- @tparam[opt] table opts `{root="/", generators=nil, modules=nil, kernels=nil, ids=nil,
  --   softdeps=false}`: `generators` default to the active one, else every installed one;
  --   `modules` are added to the VFIO set; `ids` (list or "a:b,c:d") also writes
  --   /etc/modprobe.d/vfioinit.conf
  -- @treturn[1] Plan the plan (see the Plan type below)
  -- @treturn[2] nil
  -- @treturn[2] string message, `PATH:LINE: reason` where a file is at fault
  function M.plan(opts)
    local o, err = checkopts(opts, "plan")
    if not o then return nil, err end
    local run, rerr = runs.new(o, registry, "plan")
    if not run then return nil, rerr end
    -- the plan outlives its run: Plan:apply reads root afresh, without the run's held fd
    local plan, perr = planner.plan(run)
    run:close()
    return plan, perr
  end

  --- Read every image of the selected kernels and generators and check the modules are inside.
  -- @function verify
  -- @tparam[opt] table opts `{root="/", kernels=nil, generators=nil, modules=nil, full=false}`
  --   (full: read every image, even one unchanged since it was verified)
  -- @treturn[1] {table,...} `{kernel=, generator=, image=, kind="image"|"uki", ok=bool, missing={...},
  --   error=, cmdline=, chain=, fingerprint=}` each
  -- @treturn[2] nil
  -- @treturn[2] string message
  function M.verify(opts)
    local o, err = checkopts(opts, "verify")
    if not o then return nil, err end
    return pipeline.verify_all(o, registry)
  end

  --- Rebuild the images of the selected generators and kernels with the generator's own
  -- command (chrooted when root is not /, never through a shell), keeping the previous image
  -- until the new one is verified.
  -- @function rebuild
  -- @tparam[opt] table opts `{root="/", generators=nil, kernels=nil, timeout=600 (seconds),
  --   jobs=CPUs (commands at a time, one per kernel), on_output=function(line), log=function(msg)}`
  -- @treturn[1] table report, the shape of update_initramfs's; entries under `report.rebuilt`
  -- @treturn[2] nil
  -- @treturn[2] string message
  -- @treturn[2] table the partial report, when commands ran before the failure
  function M.rebuild(opts)
    local o, err = checkopts(opts, "rebuild")
    if not o then return nil, err end
    if lock_env_error() then return nil, lock_env_error() end
    return lock.with_lock(o.root or "/", pipeline.rebuild_all, o, registry)
  end

  --- Everything the CLI status command shows, as a table.
  -- @function status
  -- @tparam[opt] table opts `{root="/", generators=, kernels=, modules=, ids=, softdeps=}`
  -- @treturn[1] table `{root=, distro=, active=, generators=, kernels={{version=, modules=, error=}...},
  --   configured=bool, pending_changes={path...}, plan_error=, images={...}}`
  -- @treturn[2] nil
  -- @treturn[2] string message
  function M.status(opts)
    local o, err = checkopts(opts, "status")
    if not o then return nil, err end
    return pipeline.status(o, registry)
  end

end

-- boot_chains, update_initramfs, revert (and the Plan type's documentation).
local function bind_update(M, registry)

  --- What boots each kernel: unified kernel images, BLS entries, GRUB's generated menu, else
  -- the generator's default image (docs/CONTRACT.md "Boot chains").
  -- @function boot_chains
  -- @tparam[opt] table opts `{root="/", kernels=nil, generators=nil}`
  -- @treturn[1] {table,...} one entry per chain: `{kernel=, kind="uki"|"image", path=, initramfs=,
  --   cmdline=, cmdline_source=, generated_from=, entry=, loader=, default=, exists=}`
  -- @treturn[2] nil
  -- @treturn[2] string message (`PATH:LINE: reason` for a loader file at fault)
  function M.boot_chains(opts)
    local o, err = checkopts(opts, "boot_chains")
    if not o then return nil, err end
    return pipeline.boot_chains(o, registry)
  end

  --- The whole job: detect, plan, apply, rebuild the stale images, verify.
  -- @function update_initramfs
  -- @tparam[opt] table opts the options of plan, and `dry_run=false` (write nothing anywhere),
  --   `rebuild=true`, `verify=true`, `full=false`, `timeout=600`, `jobs=CPUs` (rebuild commands
  --   at a time), `log=function(msg)`, `on_output=function(line)`
  -- @treturn[1] table report: `ok`, `error`, `root`, `dry_run`, `kernels`,
  --   `generators`, `modules`, `changes` (`{generator=, path=, new=}`), `diff`, `rebuilt`
  --   (`{kernel=, generator=, image=, status=, seconds=, ok=, error=, ...}`), `verified`
  --   (verify's entries, `stale=true` for an image not rebuilt), `images_stale`, `leftovers`,
  --   `warnings`
  -- @treturn[2] nil
  -- @treturn[2] string message
  -- @treturn[2] table the report so far (`ok=false`, `error=` the message)
  M.update_initramfs = update_initramfs(registry)

  --- Undo every change vfioinit made: restore each file to its content before the first
  -- change (remove the files it created) when it still holds exactly what vfioinit last
  -- wrote; otherwise refuse, changing nothing, one line per file.
  -- @function revert
  -- @tparam[opt] table opts `{root="/", force=false, dry_run=false}`: `force` keeps an edited
  --   file's content as PATH.vfioinit-edited, then restores; `dry_run` writes nothing
  -- @treturn[1] boolean true
  -- @treturn[1] {table,...} the second value, one entry per file: `{path=,
  --   action="restored"|"removed"|"unchanged", kept=PATH.vfioinit-edited|nil, before=, after=}`
  --   (`before`/`after`: the current content and what revert writes, nil for no file; with
  --   `dry_run` the diff revert would make); `list.regenerated`: the boot-loader commands
  --   run (a tool's inverse, update-grub, kernel-install); `list.leftovers`: the
  --   `<image>.vfioinit-prev` settled first, as apply does
  -- @treturn[2] nil
  -- @treturn[2] string message (refusals: one line per file)
  -- @treturn[2] {table,...} refused, `{path=, reason=}` each; `lost=true` for a file whose
  --   backup cannot be read (the others were restored: `refused.reverted` lists them)
  M.revert = revert(registry)

  --- After a good trial boot (`update_initramfs{trial=true}`): check the trial booted, make
  -- its configuration permanent as update_initramfs would, then remove the trial's entry,
  -- image and files.
  -- @function commit
  -- @tparam[opt] table opts `{root="/", timeout=600, log=function(msg), on_output=function(line)}`
  -- @treturn[1] table report: update_initramfs's, plus `committed` (`{id=, evidence=, removed=}`)
  -- @treturn[2] nil
  -- @treturn[2] string message (no trial, not seen booting, or the apply's error)
  -- @treturn[2] table the report so far, when the apply ran
  function M.commit(opts)
    local o, err = checkopts(opts, "commit")
    if not o then return nil, err end
    if lock_env_error() then return nil, lock_env_error() end
    return trial.commit(o, registry)
  end

  --- A plan, as plan returns it.
  -- @type Plan
  -- @tfield string root
  -- @tfield {table,...} changes `{generator=, path=, before=, after=}` (strings; `before` nil
  --   for a new file); empty when root is configured already
  -- @tfield {string,...} modules the modules the images will load early
  -- @tfield {string,...} warnings

  --- The unified diff of every change, paths as seen inside root (`patch -p0 -d ROOT`).
  -- @function Plan:diff
  -- @treturn string the diff ("" when nothing changes)

  --- Write the plan: each file atomically (temporary file, fsync, rename), mode and owner
  -- kept, originals recorded for revert; files already written are rolled back if a later
  -- one fails. Refuses when a file changed since the plan was made.
  -- @function Plan:apply
  -- @tparam[opt] table opts `{backup=true}` (true is the only value: revert must be able to
  --   undo every apply)
  -- @treturn[1] boolean true
  -- @treturn[2] nil
  -- @treturn[2] string message

  --- @section end
end

-- Seed-compatible names (thin wrappers; see CONTRACT.md)
local function bind_seed(M, registry)

  --- Seed-compatible: the set of installed generators.
  -- @function detect_initramfs_systems
  -- @tparam[opt] table opts `{root="/"}`
  -- @treturn[1] table `{[name]=true}` of installed generators
  -- @treturn[2] nil
  -- @treturn[2] string message
  function M.detect_initramfs_systems(opts)
    options.check(opts, "detect_initramfs_systems", 2)
    local inv, err = M.detect(opts)
    if not inv then return nil, err end
    local set = {}
    for _, g in ipairs(inv.generators) do if g.installed then set[g.name] = true end end
    return set
  end

  local function ensure(fname, gen_name)
    return function(modules, opts)
      if modules ~= nil and type(modules) ~= "table" then
        error(("bad argument #1 to '%s' (table of module names expected)"):format(fname), 2)
      end
      opts = options.check(opts, fname, 2, { fields = options.CALLS.ensure, arg = 2 })
      -- an explicit list replaces the VFIO set: exactly those names
      local run, err = runs.new({ root = opts.root, generators = { gen_name }, modules = modules,
        exact_modules = modules ~= nil }, registry, "plan")
      if not run then return nil, err end
      local plan, perr = planner.plan(run)
      run:close()
      if not plan then return nil, perr end
      if opts.dry_run then return true, plan end
      local ok, aerr = plan:apply()
      if not ok then return nil, aerr end
      return true, plan
    end
  end

  --- Seed-compatible: plan and apply mkinitcpio's config for `modules`.
  -- @function ensure_mkinitcpio_modules
  -- @tparam[opt] {string,...} modules exactly these modules (nil: the VFIO set)
  -- @tparam[opt] table opts `{root="/", dry_run=false}`
  -- @treturn[1] boolean true
  -- @treturn[1] Plan the plan made (and applied unless `dry_run`)
  -- @treturn[2] nil
  -- @treturn[2] string message
  M.ensure_mkinitcpio_modules = ensure("ensure_mkinitcpio_modules", "mkinitcpio")

  --- Seed-compatible: plan and apply dracut's config for `modules`.
  -- @function ensure_dracut_modules
  -- @tparam[opt] {string,...} modules exactly these modules (nil: the VFIO set)
  -- @tparam[opt] table opts `{root="/", dry_run=false}`
  -- @treturn[1] boolean true
  -- @treturn[1] Plan the plan
  -- @treturn[2] nil
  -- @treturn[2] string message
  M.ensure_dracut_modules = ensure("ensure_dracut_modules", "dracut")

  --- Seed-compatible: plan and apply booster's config for `modules`.
  -- @function ensure_booster_modules
  -- @tparam[opt] {string,...} modules exactly these modules (nil: the VFIO set)
  -- @tparam[opt] table opts `{root="/", dry_run=false}`
  -- @treturn[1] boolean true
  -- @treturn[1] Plan the plan
  -- @treturn[2] nil
  -- @treturn[2] string message
  M.ensure_booster_modules = ensure("ensure_booster_modules", "booster")

  --- Seed-compatible: plan and apply initramfs-tools' config for `modules`.
  -- @function ensure_initramfs_modules_debian
  -- @tparam[opt] {string,...} modules exactly these modules (nil: the VFIO set)
  -- @tparam[opt] table opts `{root="/", dry_run=false}`
  -- @treturn[1] boolean true
  -- @treturn[1] Plan the plan
  -- @treturn[2] nil
  -- @treturn[2] string message
  M.ensure_initramfs_modules_debian = ensure("ensure_initramfs_modules_debian", "initramfs-tools")

end

--- A new, independent vfioinit instance: its own generator registry and policies.
-- @function new
-- @treturn table an API table like `require "vfioinit"`
local function new()
  local M = { _VERSION = "vfioinit " .. core._VERSION }
  local registry = generators.new()
  registry.loaders = require("vfioinit.boot").new()  -- the instance's boot-loader plugins
  bind_registry(M, registry)
  bind_facts(M, registry)
  bind_pipeline(M, registry)
  bind_update(M, registry)
  bind_seed(M, registry)
  -- per-distribution composition, bound on first use (a command that applies none loads none)
  local policy
  local function bound() policy = policy or require("vfioinit.policy").bind(M); return policy end
  M.policy = setmetatable({}, { __index = function(_, k) return bound()[k] end,
    __newindex = function(_, k, v) bound()[k] = v end, __call = function(_, ...) return bound()(...) end })
  M.new = new
  return M
end

return new()
