-- plan -> diff -> apply. A plan is computed without writing anything; apply
-- validates that nothing moved since, records originals, then writes each file
-- atomically, rolling back the files it already wrote if a later one fails.
local core = require "vfioinit.core"
local util = require "vfioinit.util"
local detect = require "vfioinit.detect"
local kernel = require "vfioinit.kernel"
local context = require "vfioinit.context"
local modprobe = require "vfioinit.modprobe"
local state = require "vfioinit.state"
local diff = require "vfioinit.diff"

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

-- Restore files already written by a failed apply.
local function rollback(root, done)
  for i = #done, 1, -1 do
    local c = done[i]
    if c.before == nil then core.fs.remove(root, c.path)
    else core.fs.write_atomic(root, c.path, c.before) end
  end
end

local function apply_locked(self, opts)
  local root = self.root
  -- nothing moved since the plan was made
  local ctx = context.new({ root = root })
  for _, c in ipairs(self.changes) do
    local cur, err = ctx.read(c.path)
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
  -- files themselves (lua/vfioinit/state.lua)
  local ok, err = state.journal(root, self.changes, opts.backup ~= false)
  if not ok then return nil, err end
  local done = {}
  for _, c in ipairs(self.changes) do
    if c.after == nil then
      ok, err = core.fs.remove(root, c.path)
    else
      ok, err = core.fs.mkdirs(root, (util.split_path(c.path)), 493)
      if ok then ok, err = core.fs.write_atomic(root, c.path, c.after, 420) end
    end
    if not ok then break end
    done[#done + 1] = c
  end
  if ok then ok, err = state.finish(root) end
  if not ok then
    -- a failed apply leaves every file as it was and records nothing of it
    rollback(root, done)
    state.finish(root)
    return nil, err
  end
  return true
end

function Plan:apply(opts)
  if state.LOCK_TIMEOUT_ERROR then return nil, state.LOCK_TIMEOUT_ERROR end
  if #self.changes == 0 then
    state.tidy(self.root)  -- best effort: nothing of this apply depends on it
    return true
  end
  return state.with_lock(self.root, apply_locked, self, opts or {})
end

-- An extra module must exist (loadable or built in) in at least one selected kernel:
-- listing a name no kernel has makes the generator's own build fail later. With no
-- kernel installed yet there is nothing to check against, and the name is kept.
local function known_module(root, kernels, name)
  for _, k in ipairs(kernels) do
    local st, err = kernel.module_state({ root = root, kernel = k, name = name })
    if st == nil then return nil, err end
    if st then return true end
  end
  if #kernels == 0 then return true end
  return nil, ("module %s: no such module in kernel%s %s"):format(name, #kernels > 1 and "s" or "",
    table.concat(kernels, ", "))
end

-- The module list for the selected kernels: a VFIO module is listed when some
-- kernel has it as a loadable module; built into every kernel means not listed.
local function wanted(root, kernels, extra)
  local want, seen = {}, {}
  local per_kernel = {}
  for _, name in ipairs(util.VFIO) do
    local module_somewhere, builtin_everywhere, missing_in = false, #kernels > 0, {}
    for _, k in ipairs(kernels) do
      if not per_kernel[k] then
        local mods, err = kernel.modules({ root = root, kernel = k })
        if not mods then return nil, err end  -- e.g. an index that is a FIFO: name it
        per_kernel[k] = mods
      end
      local st = "absent"
      for _, m in ipairs(per_kernel[k]) do if m.name == name then st = m.state end end
      if st == "module" then module_somewhere = true end
      if st ~= "builtin" then builtin_everywhere = false end
      if st == "missing" then missing_in[#missing_in + 1] = k end
    end
    if #kernels == 0 then
      -- no kernel installed yet (provisioning ahead of the kernel): the base set
      if name ~= "vfio_virqfd" then want[#want + 1] = name; seen[name] = true end
    elseif module_somewhere then
      want[#want + 1] = name; seen[name] = true
    elseif not builtin_everywhere and #missing_in == #kernels and name ~= "vfio_virqfd" then
      return nil, ("/lib/modules/%s: kernel has no %s module (CONFIG_VFIO disabled?)"):format(missing_in[1], name)
    end
  end
  for _, m in ipairs(extra) do
    if not seen[m] then
      local ok, err = known_module(root, kernels, m)
      if not ok then return nil, err end
      want[#want + 1] = m; seen[m] = true
    end
  end
  return want
end

-- The generators an operation acts on: the named ones, else the active one(s), else
-- every installed one.
function M.select_generators(inv, registry, names)
  local list = {}
  if names and #names > 0 then
    for _, n in ipairs(names) do
      local g, err = registry:get(n)
      if not g then return nil, err end
      list[#list + 1] = g
    end
    -- `--generator X --generator X` acts once: twice would edit the same file twice
    return util.unique(list)
  end
  for _, g in ipairs(inv.generators) do
    if g.active then list[#list + 1] = assert(registry:get(g.name)) end
  end
  if #list == 0 then
    for _, g in ipairs(inv.generators) do
      if g.installed then list[#list + 1] = assert(registry:get(g.name)) end
    end
  end
  if #list == 0 then
    local cmds = {}
    for _, g in ipairs(inv.generators) do cmds[#cmds + 1] = registry:get(g.name).command end
    return nil, inv.root .. ": no initramfs generator installed (looked for " .. table.concat(cmds, ", ") .. ")"
  end
  return list
end

-- The modprobe.d change, if any; sets ctx.modprobe_file when the file is (to be) there.
local function modprobe_change(ctx, root, kernels, ids, softdeps)
  local existing, err = ctx.read(modprobe.FILE)
  if err then return nil, err end
  if existing then ctx.modprobe_file = modprobe.FILE end
  if not (ids and #ids > 0) and not softdeps then return false end
  local drivers = {}
  if ids and #ids > 0 then
    for _, k in ipairs(kernels) do
      local res, derr = kernel.drivers_for({ root = root, kernel = k, ids = ids })
      if not res then return nil, derr end
      for _, r in ipairs(res) do
        for _, m in ipairs(r.modules) do drivers[m] = true end
      end
    end
  end
  if softdeps then
    for _, g in ipairs(util.GPU) do drivers[g] = true end
  end
  local cerr = modprobe.conflicts(ctx, ids)
  if cerr then return nil, cerr end
  ctx.modprobe_file = modprobe.FILE
  local after = modprobe.content(ids, util.sorted_keys(drivers))
  if after == existing then return false end
  return { generator = "modprobe", path = modprobe.FILE, before = existing, after = after }
end

-- plan(opts, registry) -> plan | nil, err
function M.plan(opts, registry)
  local root = opts.root or "/"
  local extra, merr = util.check_modules(opts.modules)
  if not extra then return nil, merr end
  local ids, ierr = util.check_ids(opts.ids)
  if opts.ids and not ids then return nil, ierr end
  local inv, derr = detect.detect(root, registry)
  if not inv then return nil, derr end
  local kernels = util.unique(opts.kernels) or inv.kernels
  for _, k in ipairs(kernels) do
    if type(k) ~= "string" or not inv.kernel_dirs[k] then
      return nil, ("/lib/modules/%s: no such kernel in %s"):format(tostring(k), root)
    end
  end
  local gens, gerr = M.select_generators(inv, registry, opts.generators)
  if not gens then return nil, gerr end
  local want, werr
  if opts.exact_modules then
    want = util.unique(extra)  -- the seed-compatible ensure_* calls name their modules exactly
  else
    want, werr = wanted(root, kernels, extra)
    if not want then return nil, werr end
  end
  local ctx = context.new({ root = root, modules = want, ids = ids, softdeps = opts.softdeps,
    distro = inv.distro, kernels = kernels })
  local changes = {}
  local mp, perr = modprobe_change(ctx, root, kernels, ids, opts.softdeps)
  if mp == nil then return nil, perr end
  if mp then changes[#changes + 1] = mp end
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
  -- a file whose owner removed every write bit is not ours to change (root could, but should not)
  for _, c in ipairs(changes) do
    if c.before ~= nil then
      local st = core.fs.stat(root, c.path)
      if st and util.band(st.mode, 146) == 0 then
        return nil, ("%s:1: read-only file (mode %03o); make it writable to let vfioinit edit it"):format(c.path, st.mode)
      end
    end
  end
  return setmetatable({
    root = root, changes = changes, generators = gens, kernels = kernels, modules = want,
    ids = ids, inventory = inv, warnings = ctx.warnings, ctx = ctx,
  }, Plan)
end

return M
