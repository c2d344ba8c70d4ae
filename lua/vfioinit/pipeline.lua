--[[ vfioinit.pipeline: the stages over one run, and the public operations composed
of them (docs/INTERNALS.md "The pipeline").

  run.new(opts)      -> run      options checked, root detected, one context
  plan(run)          -> plan     lua/vfioinit/plan.lua: changes, diff, apply
  apply(plan)        -> ok       plan:apply (journal, atomic writes, rollback)
  sweep(run, gens)   -> leftovers  <image>.vfioinit-prev of an interrupted run settled
  stale(run, plan, modules)   -> jobs  {gen=, kernels=} whose images must be rebuilt
  rebuild(run, jobs, ...)     -> ok    lua/vfioinit/rebuild.lua; each rebuilt image's
                                       verification into report.rebuilt/report.verified
  verify(run, gens, modules)  -> list  run:verified per generator and kernel (read once)

Each stage takes what the one before returned; `modules` are the extra modules the
images must carry beside the VFIO set (the run's --module list; none for status).

Every operation that returns a report returns M.report's shape.
]]
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local runs = require("vfioinit.run")
local context = require("vfioinit.context")
local planner = util.lazy "vfioinit.plan"
local rebuild = util.lazy "vfioinit.rebuild"
local bootloaders = util.lazy "vfioinit.boot.cmdline"
local kinstall = util.lazy "vfioinit.boot.kinstall"
local store = require("vfioinit.state.store")
local leftovers = util.lazy "vfioinit.leftovers"
local trial = util.lazy "vfioinit.trial"
local signing = util.lazy "vfioinit.signing"

local M = {}

--- The one report shape (update_initramfs, rebuild; docs/INTERNALS.md "The report shape").
function M.report(root, dry_run)
  return {
    ok = false,           -- true when every stage that ran succeeded
    error = nil,          -- the first failure's message ("PATH:LINE: reason" where a file is at fault)
    root = root,
    dry_run = dry_run or false,
    kernels = {},         -- kernel versions acted on
    generators = {},      -- generator names acted on
    modules = {},         -- the module list the configs carry
    changes = {},         -- {generator=, path=, new=bool} written (or, dry_run, to write)
    diff = "",            -- unified diff of those changes
    rebuilt = {},         -- one rebuild.run entry per kernel and command
    verified = {},        -- one verify.check result per generator and kernel
    leftovers = {},       -- what leftovers.sweep settled first
    warnings = {},        -- notes of the generators' edits
  }
end

local function names_of(gens)
  local out = {}
  for _, g in ipairs(gens) do out[#out + 1] = g.name end
  return out
end

-- The plan's facts into the report.
local function describe(report, plan)
  report.modules, report.kernels = plan.modules, plan.kernels
  report.generators = names_of(plan.generators)
  report.warnings = plan.warnings
  report.diff = plan:diff()
  for _, c in ipairs(plan.changes) do
    report.changes[#report.changes + 1] = { generator = c.generator, path = c.path, new = c.before == nil }
  end
end

--- apply stage: write the plan's changes (none: nothing is touched).
function M.apply(plan, log)
  if #plan.changes == 0 then return true end
  log(("applying %d change(s)"):format(#plan.changes))
  return plan:apply()
end

--- sweep stage: an earlier run killed mid-rebuild may have left <image>.vfioinit-prev
-- (also of a file kernel-install writes: lua/vfioinit/boot/kinstall.lua).
function M.sweep(run, gens, report, log)
  local all = {}
  for _, g in ipairs(gens) do
    all[#all + 1] = g
    local targets, any = kinstall.targets(run, g, run.kernels)
    if any then all[#all + 1] = kinstall.wrap(g, targets) end
  end
  report.leftovers = leftovers.sweep(run.ctx, all, run.kernels, log)
  return report.leftovers
end

--- settle(root, registry) -> leftovers: the sweep stage for `revert`, which has no plan:
-- over every installed generator (a root that cannot be read has none to settle).
function M.settle(root, registry)
  local run = runs.new({ root = root }, registry, "revert")
  if not run then return {} end
  local gens, report = {}, {}
  for _, g in ipairs(run.inventory.generators) do
    if g.installed then gens[#gens + 1] = registry:get(g.name) end
  end
  M.sweep(run, gens, report)
  run:close()
  return report.leftovers
end

--- stale stage: a generator rebuilds the kernels whose image is behind its config (the
-- config or the modprobe file changed) or fails verification.
function M.stale(run, plan, modules, log)
  local changed = {}
  for _, c in ipairs(plan.changes) do
    changed[c.generator] = true
    -- a UKI embeds its command line: a changed /etc/kernel/cmdline makes every image stale
    if c.stale_images then changed.modprobe = true end
  end
  local jobs = {}
  for _, g in ipairs(plan.generators) do
    local stale = {}
    for _, k in ipairs(run.kernels) do
      if changed[g.name] or changed.modprobe or not run:verified(g, k, { modules = modules }).ok then stale[#stale + 1] = k end
    end
    if #stale == 0 then log(g.name .. ": every image is up to date; nothing to rebuild")
    else jobs[#jobs + 1] = { gen = g, kernels = stale } end
  end
  return jobs
end

-- An image must carry the VFIO modules only when its generator's config asks for them
-- (`configured`: nothing left to plan); after `revert` a rebuild just has to produce one.
-- Each verification of a rebuilt image goes to `results` (generator, kernel) too.
local function verifier(run, configured, modules, results)
  return function(gen, kver)
    if not configured[gen.name] then
      local path = gen.image_path(run.ctx, kver)
      local st = path and core.fs.stat(run.root, path)
      if st and st.size > 0 then return true end
      return false, { "image" }
    end
    run:forget(gen, kver)  -- the image was just rebuilt: check what was built
    local r = run:verified(gen, kver, { modules = modules, built = true })
    results[gen.name .. "\0" .. kver] = r
    return r.ok, r.missing
  end
end

--- rebuild stage: run each job's command; entries go to report.rebuilt. Each rebuilt image
-- is verified (opts.modules: the extra modules it must carry). `opts.stop` ends at the
-- first failing generator. A kernel whose boot chain kernel-install builds
-- is rebuilt by `kernel-install add` (lua/vfioinit/boot/kinstall.lua: instead of, or after,
-- the generator's own command). Returns true, or false with report.error set, and the
-- verification results by generator and kernel ("name\0kver").
function M.rebuild(run, jobs, opts, configured, report)
  local split, results = {}, {}
  -- the commands see what the plan wants (a deployment's mechanism tracks the modprobe.d file)
  local ctx = opts.wants and context.wanting(run.ctx, opts.wants) or run.ctx
  for _, job in ipairs(jobs) do
    for _, j in ipairs(kinstall.split(run, job.gen, job.kernels)) do split[#split + 1] = j end
  end
  local failed = {}
  for _, job in ipairs(split) do
    if job.after then
      -- kernel-install copies the generator's image: not one that failed to build or verify
      local keep = {}
      for _, k in ipairs(job.kernels) do
        if not failed[job.gen.name .. "\0" .. k] then keep[#keep + 1] = k end
      end
      job = { gen = job.gen, kernels = keep }
    end
    for _, k in ipairs(job.kernels) do run:forget(job.gen, k) end
    -- a generator that builds nothing in root (an ostree deployment's mechanism) runs its own
    local r = (job.gen.rebuild_run or rebuild.run)(ctx, { job.gen }, {
      kernels = job.kernels, on_output = opts.on_output, timeout = opts.timeout, log = opts.log, jobs = opts.jobs,
      leftovers = report.leftovers, verify = opts.verify ~= false and verifier(run, configured, opts.modules, results) or nil,
      sign = opts.sign,
    })
    for _, e in ipairs(r.rebuilt) do
      report.rebuilt[#report.rebuilt + 1] = e
      if e.warning then report.warnings[#report.warnings + 1] = e.warning end
      if not e.ok then failed[e.generator .. "\0" .. e.kernel] = true end
    end
    if not r.ok then
      report.error = report.error or r.error
      if opts.stop then return false, results end
    end
  end
  return report.error == nil, results
end

--- verify stage: one result per generator and kernel, each image read once per run.
function M.verify(run, gens, modules)
  local out = {}
  for _, g in ipairs(gens) do
    for _, k in ipairs(run.kernels) do out[#out + 1] = run:verified(g, k, { modules = modules }) end
  end
  return out
end

-- update_initramfs' last stage: every image verified; with rebuild=false a failing one
-- is stale (behind its config), not broken.
local function verify_all(run, plan, opts, report)
  local all_ok = true
  report.images_stale = {}
  report.verified = M.verify(run, plan.generators, run.extra)
  for _, v in ipairs(report.verified) do
    if not v.ok then
      all_ok = false
      if opts.rebuild == false then
        v.stale = true
        report.images_stale[#report.images_stale + 1] = v.image
      end
    end
  end
  if not all_ok and opts.rebuild ~= false then
    report.error = "an image lacks VFIO modules after the rebuild (see verified)"
    for _, v in ipairs(report.verified) do
      -- the rebuild cannot fix a file the generator does not build: say which one boots
      if not v.ok and v.chain then
        report.error = ("%s boots %s, not %s (the image %s builds): %s"):format(v.chain, v.image,
          v.generator_image, v.generator, v.error or ("it lacks " .. table.concat(v.missing, ", ")))
        break
      end
    end
    return false
  end
  report.images_ok = all_ok
  return true
end

-- --cmdline, after apply: regenerate what the loader reads (grub.cfg) when a command-line
-- file changed or what it boots lacks the parameters; after verify: read them back.
local function cmdline_regenerate(run, plan, opts, report)
  local changed = false
  for _, c in ipairs(plan.changes) do if c.generator == "cmdline" then changed = true end end
  if not changed and bootloaders.judge(run, bootloaders.readback(run)) then return true end
  local list, err = bootloaders.regenerate(run, { log = opts.log, timeout = opts.timeout, on_output = opts.on_output })
  if #list > 0 then run:boot_changed() end
  report.regenerated = list
  if err then report.error = err; return false end
  return true
end

-- Did vfioinit put parameters on root's command line? The manifest records each file the
-- `cmdline` stage wrote, until revert: then verify, status and apply check the command line
-- without --cmdline too.
local function cmdline_recorded(root)
  for _, e in ipairs(store.load(root) or {}) do
    if e.generator == "cmdline" and e.kind ~= "dir" and not e.flags.reverted then return true end
  end
  return false
end

local function checks_cmdline(run) return run.opts.cmdline or cmdline_recorded(run.root) end

-- The command line each boot entry passes, as verify results ({kernel=, generator="cmdline",
-- image= (the file and line it is read from), entry=, cmdline=, ok=, missing=, error=}),
-- judged by the rule apply uses (bootloaders.judge): one per entry judged, and one for a
-- failure no entry carries (no grub.cfg entry boots the kernel, no loader configuration).
local function cmdline_results(run)
  local out = {}
  local targets, terr = run:cmdline_targets()
  if not targets then
    return { { generator = "cmdline", image = run.root, ok = false, missing = {}, error = terr } }
  end
  local list = bootloaders.readback(run)
  for _, e in ipairs(list) do
    if not e.recovery then
      out[#out + 1] = { kernel = e.kernel, generator = "cmdline", image = e.source or e.target, entry = e.entry,
        cmdline = e.cmdline, ok = e.ok == true, missing = e.ok and {} or { e.missing }, error = e.error }
    end
  end
  local ok, why = bootloaders.judge(run, list)
  local shown = false
  for _, r in ipairs(out) do shown = shown or not r.ok end
  if not ok and not shown then out[#out + 1] = { generator = "cmdline", image = run.root, ok = false, missing = {}, error = why } end
  return out
end

local function cmdline_verify(run, report)
  report.cmdline = bootloaders.readback(run)
  local ok, why = bootloaders.judge(run, report.cmdline)
  if not ok then report.error = why end
  return ok
end

-- plan -> apply -> sweep -> stale -> rebuild -> verify over one run (under root's lock
-- unless dry_run). Fills and returns `report`.
local function update_stages(run, opts, report)
  local log = opts.log or function() end
  if run.opts.trial then
    report.error = trial.refuses(run)
    if report.error then return report end
  end
  local plan, err = planner.plan(run)
  if not plan then report.error = err; return report end
  describe(report, plan)
  -- sign= is checked before anything is written (it signs what the rebuild builds)
  if opts.sign then
    local signable, serr = signing.check(run.root, opts.sign)
    if opts.rebuild == false then serr = "sign: nothing is rebuilt (rebuild=false) to sign" end
    if not signable or opts.rebuild == false then report.error = serr; return report end
  end
  if report.dry_run then report.ok = true; return report end
  -- a trial (lua/vfioinit/trial.lua) writes its own files, never the plan's
  if run.opts.trial then report.ok = trial.apply(run, plan, opts, report); return report end
  if not opts.committing then
    report.error = require("vfioinit.trial.record").blocks(run.root)
    if report.error then return report end
  end
  local ok, aerr = M.apply(plan, log)
  if not ok then report.error = aerr; return report end
  report.applied = #plan.changes > 0 or nil
  M.sweep(run, plan.generators, report, log)
  if run.opts.cmdline and opts.rebuild == false and #bootloaders.commands(run) > 0 then
    report.warnings[#report.warnings + 1] = "the boot loader's configuration was not regenerated (no rebuild): run "
      .. table.concat(bootloaders.commands(run)[1].argv, " ")
  elseif run.opts.cmdline and opts.rebuild ~= false and not cmdline_regenerate(run, plan, opts, report) then
    return report
  end
  if opts.rebuild ~= false then
    local jobs = M.stale(run, plan, run.extra, log)
    -- every generator's config is as planned now: its images must carry the modules
    local configured, gerr = {}, nil
    for _, g in ipairs(plan.generators) do configured[g.name] = true end
    if #jobs > 0 then gerr = select(2, run:targets()) end
    if gerr then report.error = gerr; return report end
    local ropts = { on_output = opts.on_output, timeout = opts.timeout, log = log, stop = true, jobs = opts.jobs,
      sign = opts.sign, modules = run.extra, wants = plan.wants }
    if not M.rebuild(run, jobs, ropts, configured, report) then return report end
    local pinned, perr = bootloaders.after_rebuild(run, report.rebuilt)
    if not pinned then report.error = perr; return report end
  end
  if opts.verify ~= false and not verify_all(run, plan, opts, report) then return report end
  -- --cmdline --no-rebuild regenerated no grub.cfg (a warning says so): nothing to read back yet
  local cl = run.opts.cmdline and opts.rebuild ~= false or (not run.opts.cmdline and cmdline_recorded(run.root))
  if cl and opts.verify ~= false and not cmdline_verify(run, report) then return report end
  report.ok = true
  return report
end

--- update(opts, registry) -> report (report.ok false with report.error on failure)
function M.update(opts, registry)
  local report = M.report(opts.root or "/", opts.dry_run)
  if opts.trial_cmdline and not opts.trial then report.error = "trial_cmdline needs trial=true (--trial)"; return report end
  -- a trial builds images of its own, which the signature check does not follow
  if opts.trial and opts.sign then report.error = "sign: a trial's own images are not signed (trial=true takes no sign=)"; return report end
  local run, err = runs.new(opts, registry, "update_initramfs")
  if not run then report.error = err; return report end
  update_stages(run, opts, report)
  run:close()
  return report
end

-- Is each generator's config in place? Answered by the run's own plan (one per run);
-- a plan that fails counts every generator as not configured. Also the plan's wants (nil
-- when it failed).
local function configured_by(run)
  local plan = planner.plan(run)
  local configured = {}
  for _, g in ipairs(plan and plan.generators or {}) do configured[g.name] = true end
  for _, c in ipairs(plan and plan.changes or {}) do configured[c.generator] = nil end
  return configured, plan and plan.wants
end

local function rebuild_stages(run, opts, report)
  local gens, err = run:targets()
  if not gens then return nil, err end
  report.kernels, report.generators = run.kernels, names_of(gens)
  local configured, wants = configured_by(run)
  M.sweep(run, gens, report, opts.log)
  local jobs = {}
  for _, g in ipairs(gens) do jobs[#jobs + 1] = { gen = g, kernels = run.kernels } end
  local ropts = setmetatable({ modules = run.extra, wants = wants }, { __index = opts })
  local ok, results = M.rebuild(run, jobs, ropts, configured, report)
  if ok then
    local pinned, perr = bootloaders.after_rebuild(run, report.rebuilt)
    if not pinned then report.error = perr end
  end
  for _, e in ipairs(report.rebuilt) do
    report.verified[#report.verified + 1] = results[e.generator .. "\0" .. e.kernel]
  end
  report.ok = report.error == nil
  if not report.ok then return nil, report.error, report end
  return report
end

--- rebuild(opts, registry) -> report | nil, err, partial report
function M.rebuild_all(opts, registry)
  local run, err = runs.new(opts, registry, "rebuild")
  if not run then return nil, err end
  local report = M.report(run.root)
  local r, rerr, partial = rebuild_stages(run, opts, report)
  run:close()
  return r, rerr, partial
end

--- verify(opts, registry) -> list of verify.check results | nil, err
function M.verify_all(opts, registry)
  local run, err = runs.new(opts, registry, "verify")
  if not run then return nil, err end
  local gens, gerr = run:targets()
  if not gens then run:close(); return nil, gerr end
  local list = M.verify(run, gens, run.extra)
  if checks_cmdline(run) then
    for _, r in ipairs(cmdline_results(run)) do list[#list + 1] = r end
  end
  run:close()
  return list
end

--- boot_chains(opts, registry) -> list of boot chains, kernel by kernel (each kernel's in
-- the boot chains' order of evidence) | nil, err
function M.boot_chains(opts, registry)
  local run, err = runs.new(opts, registry, "boot_chains")
  if not run then return nil, err end
  local out = {}
  for _, k in ipairs(run.kernels) do
    local list, cerr = run:boot_chains(k)
    if not list then run:close(); return nil, cerr end
    for _, c in ipairs(list) do out[#out + 1] = c end
  end
  run:close()
  return out
end

--- status(opts, registry) -> status | nil, err: the inventory, each kernel's VFIO
-- module states, whether the configs are in place (the run's plan) and each image's
-- verification, over one run.
function M.status(opts, registry)
  local run, err = runs.new(opts, registry, "status")
  if not run then return nil, err end
  local inv = run.inventory
  local kernels = {}
  for _, k in ipairs(run.kernels) do
    local mods, merr = run:module_details(k)
    kernels[#kernels + 1] = { version = k, modules = mods or {}, error = merr }
  end
  local plan, perr = planner.plan(run)
  local pending = {}
  for _, c in ipairs(plan and plan.changes or {}) do pending[#pending + 1] = c.path end
  local gens = (#inv.kernels > 0 and plan) and run:targets() or nil
  -- status checks the VFIO set only, as verify without --module
  local images = gens and M.verify(run, gens, {}) or {}
  -- what boots each kernel; a loader file at fault is reported, not fatal to status
  local chains, chains_error = {}, nil
  for _, k in ipairs(run.kernels) do
    local list, cerr = run:boot_chains(k)
    chains_error = chains_error or cerr
    for _, c in ipairs(list or {}) do chains[#chains + 1] = c end
  end
  local builtin = bootloaders.builtin(run)
  local cmdline = checks_cmdline(run) and plan and bootloaders.readback(run) or nil
  -- who signed each chain's image; the firmware's Secure Boot state only for the running system
  local uroot = run.ostree and run.ostree.uroot or inv.root
  local secure_boot = require("vfioinit.signature").status(uroot, chains, { firmware = uroot == "/", ctx = run.ctx })
  local ostree = run.ostree and require("vfioinit.ostree").status(run.ostree, gens and gens[1])
  run:close()
  return { ok = true, ostree = ostree, builtin_vfio_pci = builtin, cmdline = cmdline, distro = inv.distro, active = inv.active,
    root = uroot, generators = inv.generators, kernels = kernels, configured = plan and #pending == 0 or false,
    pending_changes = pending, plan_error = perr, images = images, boot_chains = chains,
    boot_chains_error = chains_error, secure_boot = secure_boot, trial = trial.status(inv.root, run.opts) }
end

return M
