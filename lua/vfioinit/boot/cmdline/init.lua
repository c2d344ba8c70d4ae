--[[ vfioinit.boot.cmdline: the kernel command line (`--cmdline`, Lua `cmdline = true`).

The targets are the boot-loader plugins with `edits` (lua/vfioinit/boot/loaders/, the
registry lua/vfioinit/boot/init.lua; docs/INTERNALS.md "Adding a boot loader"): those whose
`detect(ctx)` holds, minus the ones a selected target `covers`, in their declared `order`
(run:cmdline_targets, once per run). A target: { name=, order=, detect(ctx) -> bool,
edits(ctx, wants) -> changes | nil, err, reads = {loader names whose chains carry its words},
regenerate(ctx) -> argv | list of argv | nil, files(ctx), undo(before), revert_argvs(ctx),
unbooted(ctx, kver) -> message, stale_images = true when images embed the file (UKIs) }.
The helpers they share are beside this module (words, wordfiles, ownids, baseline, cmdtool,
toolbase, grubvars).

Stages (lua/vfioinit/pipeline.lua): `changes` (part of the plan, so diff, apply, journal,
backups and revert are the generator configs' ones), `regenerate` (after apply and after
revert: the generated grub.cfg is like an image, never backed up), `readback` (verify: the
run's boot chains whose loader a target `reads`, their command line against the words).
]]
local core = require("vfioinit.core")
local words = require("vfioinit.boot.cmdline.words")

local M = {}

-- Owners of files whose revert runs commands first, before the targets' (the ostree
-- deployment vfioinit made goes before its words leave the default one).
M.HOOKED = { "vfioinit.ostree_initramfs" }

-- The targets of root for a registry (none: the built-in plugins) | nil, err.
function M.select(ctx, loaders)
  return (loaders or require("vfioinit.boot").new()):targets(ctx)
end

function M.wants(run) return words.wants(run.ids) end

-- The kernels of the run into which vfio_pci is built (ids must go on the command line).
function M.builtin(run)
  local out = {}
  for _, k in ipairs(run.kernels) do
    local st = run:module_state(k, "vfio_pci")
    if st == "builtin" then out[#out + 1] = k end
  end
  return out
end

-- Item 5: ids for a kernel with vfio-pci built in need the command line.
function M.check_builtin(run)
  if not (run.ids and #run.ids > 0) then return true end
  local ks = M.builtin(run)
  if #ks == 0 then return true end
  local where = ("/lib/modules/%s/modules.builtin"):format(ks[1])
  if not run.opts.cmdline then
    return nil, ("%s: vfio-pci is built into kernel %s, which never reads modprobe.d options: the ids "
      .. "must go on the kernel command line as vfio-pci.ids=%s; run again with --cmdline"):format(
      where, table.concat(ks, ", "), table.concat(run.ids, ","))
  end
  run.ctx.warn(("%s: vfio-pci is built into kernel %s: the modprobe.d `options vfio-pci ids=` line does "
    .. "nothing there; vfio-pci.ids= on the kernel command line binds the devices"):format(where, table.concat(ks, ", ")))
  return true
end

-- changes(run) -> list of plan changes (generator = "cmdline", bootloader = the target) | nil, err.
function M.changes(run)
  local targets, err = run:cmdline_targets()
  if not targets then return nil, err end
  local wants, out = M.wants(run), {}
  for _, t in ipairs(targets) do
    local list, terr = t.edits(run.ctx, wants)
    if not list then return nil, terr end
    for _, c in ipairs(list) do
      c.generator, c.bootloader, c.stale_images = "cmdline", t.name, t.stale_images
      out[#out + 1] = c
    end
  end
  return out
end

-- argv, a command {argv=, bind=}, or a list of either -> list of either
local function argvs(x)
  if not x then return {} end
  if type(x[1]) == "table" then return x end
  return { x }
end

-- One command of target t: {target=, argv=, bind=}.
local function command(t, x)
  if x.argv then return { target = t.name, argv = x.argv, bind = x.bind } end
  return { target = t.name, argv = x }
end

-- The regeneration commands of the targets (default: the run's): { {target=, argv=, bind=} ... }.
function M.commands(run, targets)
  local out = {}
  for _, t in ipairs(targets or run:cmdline_targets() or {}) do
    for _, x in ipairs(argvs(t.regenerate and t.regenerate(run.ctx))) do out[#out + 1] = command(t, x) end
  end
  return out
end

M.TIMEOUT = 300
M.TAIL = 10

-- Run one regeneration command chrooted into root (like a rebuild): an entry
-- {target=, command=, status=, signal=, timed_out=, seconds=, ok=, error=}.
function M.run_command(root, c, opts)
  local tail = {}
  local e = { target = c.target, command = table.concat(c.argv, " "), ok = false }
  local res, err = core.spawn.run({ argv = c.argv, root = root ~= "/" and root or nil, bind = c.bind,
    timeout = opts.timeout or M.TIMEOUT,
    on_line = function(_, line)
      tail[#tail + 1] = line
      if #tail > M.TAIL then table.remove(tail, 1) end
      if opts.on_output then opts.on_output(line) end
    end })
  if not res then e.error = ("%s: %s"):format(e.command, err); return e end
  e.status, e.signal, e.timed_out, e.seconds = res.status, res.signal, res.timed_out, res.seconds
  e.ok = res.status == 0
  if not e.ok then
    local how = res.timed_out and "timed out" or res.signal and ("was killed by signal " .. res.signal)
      or ("exited with status " .. tostring(res.status))
    e.error = ("%s %s; last lines of output:\n%s"):format(e.command, how, table.concat(tail, "\n"))
  end
  return e
end

-- regenerate stage: each target's command; returns the entries and the first error.
function M.regenerate(run, opts)
  local out, first = {}, nil
  for _, c in ipairs(M.commands(run)) do
    if opts.log then opts.log("regenerating with " .. table.concat(c.argv, " ")) end
    local e = M.run_command(run.root, c, opts)
    out[#out + 1] = e
    first = first or e.error
  end
  return out, first
end

--- after_rebuild(run, rebuilt) -> true | nil, err: the images a rebuild wrote (rebuild.run
-- entries) may be pinned by hash in a loader's file (Limine's `path#blake2b`): each found
-- plugin's `repin(ctx, changed)` gives the edits, applied as a follow-up plan (journaled,
-- reverted like the plan's own). Runs with or without --cmdline.
function M.after_rebuild(run, rebuilt)
  local changed = {}
  for _, e in ipairs(rebuilt or {}) do
    if e.ok and e.image then changed[core.fs.resolve(run.root, e.image) or e.image] = true end
  end
  if not next(changed) then return true end
  local all = {}
  for _, t in ipairs(run.loaders:all()) do
    if t.repin and t.detect(run.ctx) then
      local list, err = t.repin(run.ctx, changed)
      if not list then return nil, err end
      for _, c in ipairs(list) do
        c.generator, c.bootloader = "cmdline", t.name
        all[#all + 1] = c
      end
    end
  end
  if #all == 0 then return true end
  run:boot_changed()
  return require("vfioinit.plan").follow_up(run, all):apply()
end

-- The target (found in ctx) one of whose files is path, or nil.
local function owner(loaders, ctx, path)
  for _, m in ipairs(M.HOOKED) do
    if path == require(m).RECORD then return require(m) end
  end
  for _, t in ipairs(loaders:all()) do
    for _, p in ipairs(t.files and t.files(ctx) or {}) do
      if p == path then return t.detect(ctx) and t or nil end
    end
  end
end

-- Run commands {target=, argv=}, each result appended to `out`; true, or nil and the
-- first failure's message (every command runs).
local function run_all(root, cmds, opts, out)
  local first
  for _, c in ipairs(cmds) do
    local e = M.run_command(root, c, opts)
    out[#out + 1] = e
    first = first or e.error
  end
  if first then return nil, first end
  return true
end

--- revert_hooks(root, opts, out [, loaders]) -> {undo=, after=}, the hooks of state.revert (run while the
-- manifest still names the file, so a failed or killed command runs again at the next
-- revert); each command's result is appended to `out`.
-- undo(step): before a tool's record goes, the tool runs the record's inverse.
-- after(steps): once every file is restored, each target with a file in the manifest
-- regenerates what it feeds: grub.cfg is generated again, kernel-install writes its BLS
-- entries again (`revert_argvs`). Also when the file was already back (`unchanged`): an
-- interrupted revert may have restored it and died before this.
function M.revert_hooks(root, opts, out, loaders)
  local context = require("vfioinit.context")
  loaders = loaders or require("vfioinit.boot").new()
  local hooks = {}
  local function ctx_of()
    local ctx = context.new({ root = root })
    ctx.ostree = opts.ostree
    return ctx
  end
  function hooks.undo(step)
    local t = owner(loaders, ctx_of(), step.entry.path)
    if not (t and t.undo) then return true end
    local cmds = {}
    for _, x in ipairs(argvs(t.undo(step.before))) do cmds[#cmds + 1] = command(t, x) end
    return run_all(root, cmds, opts, out)
  end
  function hooks.after(steps)
    local ctx = ctx_of()
    local touched, before = {}, {}
    for _, s in ipairs(steps) do
      local t = s.entry.kind ~= "dir" and owner(loaders, ctx, s.entry.path)
      if t and not t.undo then touched[t.RECORD or t.name] = t; before[t] = s.before end
    end
    local cmds, names = {}, {}
    for _, m in ipairs(M.HOOKED) do names[#names + 1] = require(m).RECORD end
    for _, t in ipairs(loaders:all()) do names[#names + 1] = t.name end
    for _, n in ipairs(names) do
      local t = touched[n]
      local list = t and (t.revert_argvs and t.revert_argvs(ctx, before[t]) or argvs(t.regenerate and t.regenerate(ctx)))
      for _, x in ipairs(list or {}) do cmds[#cmds + 1] = command(t, x) end
    end
    return run_all(root, cmds, opts, out)
  end
  return hooks
end

-- Per kernel: does what boots it carry the parameters? Every normal entry of a target's
-- chains must be right (a GRUB recovery entry gets GRUB_CMDLINE_LINUX alone, by design);
-- readback's own failures (no entry where a target needs one) count. Returns ok, first problem.
function M.judge(_, list)
  for _, e in ipairs(list) do
    if e.error then return false, e.error end
    if not e.recovery and not e.ok then
      return false, ("%s (%s): the kernel command line lacks %s"):format(e.entry, e.source, e.missing or "?")
    end
  end
  return true
end

-- Does target t read its words back from chain c? `reads`: loader names, or a function.
local function reads(t, c)
  if type(t.reads) == "function" then return t.reads(c) end
  for _, l in ipairs(t.reads or {}) do if l == c.loader then return true end end
  return false
end

-- entries(chains, t, wants, ctx, loaders, kver) -> target t's read-back entries of one
-- kernel's chains: {entry=, source=, cmdline=, ok=, missing=, default=, recovery=}; a UKI
-- not built yet is none; no normal entry where t says one is needed (`unbooted`): its error.
-- A target whose words no chain carries yet (bootc's kargs.d, read when the image is
-- installed) reads them back itself (`readback`).
function M.entries(chains, t, wants, ctx, loaders, kver)
  if t.readback then return t.readback(ctx, wants, kver) end
  local out, normal = {}, false
  for _, c in ipairs(chains) do
    if reads(t, c) and (c.kind ~= "uki" or c.exists) then
      local ok, miss = require("vfioinit.edit.cmdline").has(c.cmdline or "", wants)
      local l = loaders:get(c.loader)
      local recovery = l and l.recovery and l.recovery(c) and not c.default or nil
      normal = normal or not recovery
      out[#out + 1] = { entry = c.kind == "uki" and ("uki: " .. c.path) or c.entry,
        source = c.cmdline_source .. (c.cmdline_line and (":" .. c.cmdline_line) or ""),
        cmdline = c.cmdline, ok = ok, missing = miss, default = c.default, recovery = recovery,
        error = c.cmdline_unknown }
    end
  end
  if not normal and t.unbooted then out[#out + 1] = { ok = false, error = t.unbooted(ctx, kver) } end
  return out
end

-- readback(run) -> per kernel and entry {kernel=, target=, entry=, source=, cmdline=, ok=,
-- missing=, default=, recovery=, error=}, read from the run's boot chains.
function M.readback(run)
  local wants, out = M.wants(run), {}
  local targets = run:cmdline_targets()
  for _, t in ipairs(targets or {}) do
    for _, k in ipairs(run.kernels) do
      local chains, err = run:boot_chains(k)
      local list = chains and M.entries(chains, t, wants, run.ctx, run.loaders, k) or { { ok = false, error = err } }
      for _, e in ipairs(list) do e.kernel, e.target = k, t.name; out[#out + 1] = e end
    end
  end
  return out
end

--- readback_for(ctx, name, wants, kver [, loaders]) -> target `name`'s entries for kver, from
-- root's boot chains (no generator rules) | nil, err.
function M.readback_for(ctx, name, wants, kver, loaders)
  loaders = loaders or require("vfioinit.boot").new()
  local t = assert(loaders:get(name))
  local all, err = require("vfioinit.boot.chains").chains(ctx, { kver }, nil, loaders)
  if not all then return nil, err end
  return M.entries(all[kver], t, wants, ctx, loaders, kver)
end

return M
