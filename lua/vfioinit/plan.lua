-- The plan stage: plan(run) -> plan; plan:diff(); plan:apply() (the apply stage).
-- A plan is computed without writing anything; apply validates that nothing moved
-- since, records originals, then writes each file atomically, rolling back the files
-- it already wrote if a later one fails.
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local machine = require("vfioinit.machine")
local modprobe = require("vfioinit.modprobe")
local state = util.lazy "vfioinit.state"  -- the journal: only when there is a change
local lock = require("vfioinit.state.lock")
local diff = util.lazy "vfioinit.edit.diff"
local bind = require("vfioinit.bind")
local bootloaders = require("vfioinit.boot.cmdline")
local options = require("vfioinit.options")
local context = require("vfioinit.context")

local M = {}

local Plan = {}
Plan.__index = Plan

local function rel(path) return (path:gsub("^/+", "")) end

function Plan:diff()
  local out = {}
  for _, c in ipairs(self.changes) do
    -- a new file diffs from /dev/null, a removed one (after == nil) to it
    out[#out + 1] = diff.unified(c.before, c.after or "",
      c.before and rel(c.path) or "/dev/null", c.after and rel(c.path) or "/dev/null")
  end
  return table.concat(out)
end

-- Restore files already written by a failed apply, and remove the directories it made
-- for them (innermost first; only while empty).
local function rollback(root, done, dirs)
  for i = #done, 1, -1 do
    local c = done[i]
    if c.before == nil then core.fs.remove(root, c.path)
    else core.fs.write_atomic(root, c.path, c.before) end
  end
  for i = #dirs, 1, -1 do core.fs.remove(root, dirs[i]) end
end

local function apply_locked(self)
  local root = self.root
  -- nothing moved since the plan was made
  for _, c in ipairs(self.changes) do
    local cur, err = self.run.ctx.read(c.path)
    if err then return nil, err end
    if cur ~= c.before then
      return nil, c.path .. ": changed since the plan was made; plan again"
    end
  end
  -- temp files of a killed earlier run (nothing else writes them while we hold the lock)
  local paths = {}
  for i, c in ipairs(self.changes) do paths[i] = c.path end
  state.sweep(root, paths)
  -- journal: the writes below are recorded as pending (manifest first, then the
  -- originals) before the first file changes, and committed after the last; a run killed
  -- anywhere leaves each file before-or-after and a journal the next run settles from the
  -- files themselves (lua/vfioinit/state/)
  local dirs = {}
  for _, c in ipairs(self.changes) do
    if c.before == nil and c.after ~= nil then
      for _, d in ipairs(state.missing_dirs(root, c.path)) do dirs[#dirs + 1] = d end
    end
  end
  -- every write is recorded: revert undoes what every apply wrote
  local ok, err = state.journal(root, self.changes)
  if not ok then return nil, err end
  local done = {}
  for _, c in ipairs(self.changes) do
    if c.after == nil then
      ok, err = core.fs.remove(root, c.path)
    else
      ok, err = core.fs.mkdirs(root, (util.split_path(c.path)), 493)
      if ok then ok, err = core.fs.write_atomic(root, c.path, c.after, c.mode or 420) end
    end
    if not ok then break end
    done[#done + 1] = c
  end
  if ok then ok, err = state.finish(root) end
  if not ok then
    -- a failed apply leaves every file as it was and records nothing of it
    rollback(root, done, dirs)
    state.finish(root)
    return nil, err
  end
  return true
end

function Plan:apply(opts)
  options.check(opts, "apply", 2)
  if lock.LOCK_TIMEOUT_ERROR then return nil, lock.LOCK_TIMEOUT_ERROR end
  if #self.changes == 0 then
    state.tidy(self.root)  -- best effort: nothing of this apply depends on it
    return true
  end
  return lock.with_lock(self.root, apply_locked, self)
end

-- An extra module must exist (loadable or built in) in at least one selected kernel:
-- listing a name no kernel has makes the generator's own build fail later. With no
-- kernel installed yet there is nothing to check against, and the name is kept.
local function known_module(run, name)
  local kernels = run.kernels
  for _, k in ipairs(kernels) do
    local st, err = run:module_state(k, name)
    if st == nil then return nil, err end
    if st then return true end
  end
  if #kernels == 0 then return true end
  return nil, ("module %s: no such module in kernel%s %s"):format(name, #kernels > 1 and "s" or "",
    table.concat(kernels, ", "))
end

-- How the selected kernels ship a VFIO module: somewhere as a loadable module, built
-- into every one, and the kernels that lack it.
local function spread(run, name)
  local module_somewhere, builtin_everywhere, missing_in = false, #run.kernels > 0, {}
  for _, k in ipairs(run.kernels) do
    local mods, err = run:modules(k)
    if not mods then return nil, err end  -- e.g. an index that is a FIFO: name it
    local st = "absent"
    for _, m in ipairs(mods) do if m.name == name then st = m.state end end
    if st == "module" then module_somewhere = true end
    if st ~= "builtin" then builtin_everywhere = false end
    if st == "missing" then missing_in[#missing_in + 1] = k end
  end
  return { module_somewhere = module_somewhere, builtin_everywhere = builtin_everywhere, missing_in = missing_in }
end

-- The module list for the selected kernels: a VFIO module is listed when some
-- kernel has it as a loadable module; built into every kernel means not listed.
local function wanted(run)
  local want, seen = {}, {}
  local nk = #run.kernels
  for _, name in ipairs(machine.VFIO) do
    local s, err = spread(run, name)
    if not s then return nil, err end
    if (nk == 0 and name ~= "vfio_virqfd") or (nk > 0 and s.module_somewhere) then
      -- no kernel installed yet (provisioning ahead of the kernel): the base set
      want[#want + 1] = name; seen[name] = true
    elseif nk > 0 and not s.builtin_everywhere and #s.missing_in == nk and name ~= "vfio_virqfd" then
      return nil, ("/lib/modules/%s: kernel has no %s module (CONFIG_VFIO disabled?)"):format(s.missing_in[1], name)
    end
  end
  for _, m in ipairs(run.extra) do
    if not seen[m] then
      local ok, err = known_module(run, m)
      if not ok then return nil, err end
      want[#want + 1] = m; seen[m] = true
    end
  end
  return want
end

-- The native drivers of the run's device IDs in every selected kernel, plus the GPU
-- drivers with softdeps: the modules vfio-pci must load before.
local function softdep_drivers(run)
  local drivers = {}
  local ids = run.ids
  if ids and #ids > 0 then
    for _, k in ipairs(run.kernels) do
      local res, derr = run:drivers_for(k, ids)
      if not res then return nil, derr end
      for _, r in ipairs(res) do
        for _, m in ipairs(r.modules) do drivers[m] = true end
      end
    end
  end
  if run.opts.softdeps then
    for _, g in ipairs(machine.GPU) do drivers[g] = true end
  end
  return drivers
end

-- The modprobe.d change, if any (false: none), and the modprobe.d file the images must
-- carry (nil: none): the file when it is, or is to be, there.
local function modprobe_change(run)
  local ctx, ids = run.ctx, run.ids
  local existing, err = ctx.read(modprobe.FILE)
  if err then return nil, err end
  local file = existing and modprobe.FILE or nil
  if not (ids and #ids > 0) and not run.opts.softdeps then
    -- the file stays: what would defeat its ids is refused as when they were written
    local cerr = existing and modprobe.conflicts(ctx, modprobe.ids_of(existing))
    if cerr then return nil, cerr end
    return false, file
  end
  local drivers, derr = softdep_drivers(run)
  if not drivers then return nil, derr end
  local cerr = modprobe.conflicts(ctx, ids)
  if cerr then return nil, cerr end
  local after = modprobe.content(ids, util.sorted_keys(drivers))
  if after == existing then return false, modprobe.FILE end
  return { generator = "modprobe", path = modprobe.FILE, before = existing, after = after }, modprobe.FILE
end

-- Each generator's edits, appended to `changes`; their notes become warnings.
local function generator_changes(ctx, gens, changes)
  for _, g in ipairs(gens) do
    local list, err = g.edits(ctx)
    if not list then return nil, err end
    for _, c in ipairs(list) do
      for _, n in ipairs(c.notes or {}) do ctx.warn(c.path .. ": " .. n) end
      if c.before ~= c.after then
        c.generator = c.generator or g.name
        changes[#changes + 1] = c
      end
    end
  end
  return changes
end

-- --cmdline: the kernel command-line edits join the same plan (lua/vfioinit/boot/cmdline).
local function cmdline_changes(run, changes)
  local list, err = bootloaders.changes(run)
  if not list then return nil, err end
  for _, c in ipairs(list) do changes[#changes + 1] = c end
  return changes
end

-- A file whose owner removed every write bit is not ours to change (root could, but should not).
local function check_writable(root, changes)
  for _, c in ipairs(changes) do
    if c.before ~= nil then
      local st = core.fs.stat(root, c.path)
      if st and util.band(st.mode, 146) == 0 then
        return nil, ("%s:1: read-only file (mode %03o); make it writable to let vfioinit edit it"):format(c.path, st.mode)
      end
    end
  end
  return true
end

--- follow_up(run, changes) -> plan: changes a later stage computes (a boot loader's pinned
-- hashes after a rebuild), applied, journaled and reverted like a plan's own.
function M.follow_up(run, changes)
  return setmetatable({ root = run.root, changes = changes, generators = {}, kernels = run.kernels,
    run = run, warnings = {} }, Plan)
end

-- What the plan wants, before any edit: {modules=, modprobe_file=, bind=, cmdline=}, and
-- the modprobe.d change (false: none) | nil, err.
local function wants_of(run)
  local want, werr
  if run.opts.exact_modules then
    want = run.extra  -- the seed-compatible ensure_* calls name their modules exactly
  else
    want, werr = wanted(run)
    if not want then return nil, werr end
  end
  local mp, file = modprobe_change(run)
  if mp == nil then return nil, file end
  -- devices bound by address (lua/vfioinit/bind/init.lua): chosen and checked before any edit
  local ok, err = bootloaders.check_builtin(run)
  if not ok then return nil, err end
  local sel, serr = bind.select(run, run.ctx.warn)
  if sel == nil then return nil, serr end
  return { modules = want, modprobe_file = file, bind = sel or nil,
    cmdline = run.opts.cmdline and bootloaders.wants(run) or nil }, mp
end

--- The plan stage: plan(run) -> plan | nil, err. The plan carries what it wants
-- (plan.wants: modules, modprobe_file, bind, cmdline) and the changes that put it in
-- place; the generators' `edits` see the wants through context.wanting, the run's own
-- context is left as it is.
function M.plan(run)
  local gens, gerr = run:generators()
  if not gens then return nil, gerr end
  local wants, mp = wants_of(run)
  if not wants then return nil, mp end
  local ctx = context.wanting(run.ctx, wants)
  local changes = { mp or nil }
  local ok, err = generator_changes(ctx, gens, changes)
  if ok then ok, err = bind.changes(ctx, gens, changes) end
  if ok and run.opts.cmdline then ok, err = cmdline_changes(run, changes) end
  if ok then ok, err = check_writable(run.root, changes) end
  if not ok then return nil, err end
  local sel = wants.bind
  return setmetatable({
    root = run.root, changes = changes, generators = gens, kernels = run.kernels, modules = wants.modules,
    ids = run.ids, inventory = run.inventory, warnings = run.ctx.warnings, wants = wants, run = run,
    devices = sel and sel.devices or nil, matched = sel and sel.matched or nil,
  }, Plan)
end

return M
