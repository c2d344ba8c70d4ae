--- vfioinit.state.revert: restore every file vfioinit changed, byte for byte (or remove
-- the ones it created) -- but only files that still hold exactly what vfioinit last wrote:
-- a later hand edit is never lost. revert marks each entry `reverted` once its restore is
-- durable, and removes backups, then the manifest, only when all are: a killed revert is
-- resumed by the next one. An entry whose backup cannot be read stays recorded (the others
-- are reverted) until a forced revert forgets it.
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local manifest = require("vfioinit.state.manifest")
local store = require("vfioinit.state.store")
local journal = require("vfioinit.state.journal")

local M = {}

local ENOENT = 2
local digest = manifest.digest

-- Is dir an ancestor of the state directory (made when the first manifest was saved)?
local function holds_state(path) return manifest.DIR:sub(1, #path + 1) == path .. "/" end

local REFUSE_EDITED = "changed since vfioinit wrote it"
local REFUSE_BETWEEN = "edited by hand between two vfioinit applies"

-- classify(root, e) -> step {entry, action, before=current, after=original, refuse=reason,
-- lost=reason (its original cannot be read)} | nil, err
local function classify(root, e)
  -- restored and recorded by a revert that was killed later: its backup may be gone
  if e.flags.reverted then return { entry = e, action = "unchanged" } end
  if e.kind == "dir" then
    local st = core.fs.stat(root, e.path, true)
    return { entry = e, action = (st and st.type == "dir") and "rmdir" or "unchanged" }
  end
  local cur, err = store.read_file(root, e.path)
  if cur == false then return nil, err end
  local orig, oerr = store.original(root, e)
  if orig == false then
    return { entry = e, action = "unchanged", before = cur, after = cur, lost = "its backup cannot be read: " .. oerr }
  end
  local step = { entry = e, before = cur, after = orig }
  if cur == orig then
    step.action = "unchanged"
  else
    step.action = orig == nil and "removed" or "restored"
    if e.flags.edited then step.refuse = REFUSE_BETWEEN
    elseif digest(cur) ~= e.last then step.refuse = REFUSE_EDITED end
  end
  return step
end

-- A name for the current content of a file revert --force replaces: never an existing one.
local function kept_name(root, path)
  local name, n = path .. manifest.EDITED_SUFFIX, 1
  while core.fs.stat(root, name) do name, n = ("%s%s.%d"):format(path, manifest.EDITED_SUFFIX, n), n + 1 end
  return name
end

-- Restore one file (keeping its current content first when forced); durable on return.
local function restore(root, step)
  local e = step.entry
  if step.refuse and step.before ~= nil then
    step.kept = kept_name(root, e.path)
    local ok, err = core.fs.write_atomic(root, step.kept, step.before, 384)
    if not ok then return nil, err end
  end
  if step.after == nil then
    local ok, err, code = core.fs.remove(root, e.path)
    if not ok and code ~= ENOENT then return nil, err end
    return true
  end
  local ok, err = core.fs.mkdirs(root, (util.split_path(e.path)), 493)
  if ok then ok, err = core.fs.write_atomic(root, e.path, step.after, e.mode) end
  return ok, err
end

local function refusal(refused)
  local lines = {}
  for _, r in ipairs(refused) do
    if r.lost then
      lines[#lines + 1] = ("%s: cannot be restored, %s; 'vfioinit revert --force' leaves it as it is and forgets it")
        :format(r.path, r.reason)
    else
      lines[#lines + 1] = ("%s: %s; 'vfioinit revert --force' restores the original and keeps the current content as %s%s")
        :format(r.path, r.reason, r.path, manifest.EDITED_SUFFIX)
    end
  end
  return table.concat(lines, "\n")
end

-- plan_revert(root, opts) -> list, steps, lost | nil, err, refused. Writes nothing. A file
-- edited since vfioinit wrote it refuses the whole revert (unless forced); a file whose
-- original is lost (`lost`) only its own restore.
local function plan_revert(root, opts)
  local list, err = store.load(root)
  if not list then return nil, err end
  -- a write left pending by a killed apply is settled first (in memory only here)
  local settled, serr = journal.settle(root, list, false)
  if not settled then return nil, serr end
  local steps, refused, lost = {}, {}, {}
  for i = #settled, 1, -1 do
    local step, cerr = true, nil
    if not opts.only or opts.only(settled[i]) then step, cerr = classify(root, settled[i]) end
    if not step then return nil, cerr end
    if step ~= true then
      steps[#steps + 1] = step
      if step.refuse then refused[#refused + 1] = { path = step.entry.path, reason = step.refuse } end
      if step.lost then
        lost[#lost + 1] = { path = step.entry.path, reason = step.lost, lost = true }
        step.forgotten = opts.force or nil
      end
    end
  end
  if #refused > 0 and not opts.force then
    for _, r in ipairs(lost) do refused[#refused + 1] = r end
    return nil, refusal(refused), refused
  end
  return settled, steps, lost
end

local function report(steps)
  local out = {}
  for _, s in ipairs(steps) do
    local e = s.entry
    if e.kind == "dir" then
      -- a directory is reported once revert removed it (a dry run cannot know it will be empty)
      if s.action == "removed" then
        out[#out + 1] = { path = e.path, kind = "dir", generator = e.generator, action = "removed", before = "", after = "" }
      end
    elseif not s.lost or s.forgotten then
      out[#out + 1] = { path = e.path, kind = e.kind, generator = e.generator, action = s.action,
        kept = s.kept, forced = s.refuse and true or nil, lost = s.lost, before = s.before, after = s.after }
    end
  end
  return out
end

-- The result of a revert that could not restore `lost` (unforced): nil, one line per file,
-- the refused list carrying what was reverted.
local function partial(steps, lost)
  lost.reverted = report(steps)
  return nil, refusal(lost), lost
end

-- One step of a revert, made durable and recorded `reverted`. A lost file stays recorded
-- (unless forced: forgotten), so the next revert names it again.
local function revert_step(root, list, s, opts)
  if s.lost and not s.forgotten then return true end
  if s.action == "rmdir" then
    -- only when empty: what else is in it now is not vfioinit's to remove
    s.action = core.fs.remove(root, s.entry.path) and "removed" or "unchanged"
    -- a partial revert keeps a directory still in use: the full revert removes it later
    if opts.only and s.action ~= "removed" then return true end
  elseif s.action ~= "unchanged" then
    -- what the restore needs run (a tool's inverse) runs first: killed, it runs again
    if opts.undo then
      local ok, err = opts.undo(s)
      if not ok then return nil, err end
    end
    local ok, err = restore(root, s)
    if not ok then return nil, err end
  end
  if s.entry.flags.reverted then return true end
  s.entry.flags.reverted = true
  return store.save(root, list)
end

-- A partial revert (`only`) is done: its entries leave the manifest (with their backups),
-- the others stay recorded.
function M.forget_reverted(root, list, steps)
  local keep, gone = {}, {}
  for _, e in ipairs(list) do
    if not e.flags.reverted then keep[#keep + 1] = e elseif e.backup then gone[#gone + 1] = e.backup end
  end
  local ok, err = journal.commit(root, keep, gone, true)
  if not ok then return nil, err end
  return report(steps)
end

--- revert(root, {force=, dry_run=, begin=, undo=, after=, only=}) -> list of {path=, action=, kept=...}
-- | nil, err, refused. Checks every file first; refuses (changing nothing) when one holds
-- anything but what vfioinit last wrote, unless forced. Each restore is durable, then
-- recorded `reverted`; backups and manifest go only when every entry is. A file whose
-- backup is lost is not restored: the others are, and it is named in `refused` (with
-- `refused.reverted`, the list of the others); forced, it is left as it is and forgotten.
-- Hooks: begin() before the first write (once the checks passed); and, run while the
-- manifest still names the files (a failed or killed one runs again at the next revert),
-- undo(step) -> true | nil, err before a file is restored, after(steps) -> true | nil, err
-- once every restore is durable. only(entry) -> bool: revert just those entries (a trial's,
-- lua/vfioinit/trial.lua); the rest stay recorded.
function M.revert(root, opts)
  opts = opts or {}
  local list, steps, lost = plan_revert(root, opts)
  if not list then return nil, steps, lost end
  local unforced = #lost > 0 and not opts.force
  if opts.dry_run then
    if unforced then return partial(steps, lost) end
    return report(steps)
  end
  if opts.begin then opts.begin() end
  journal.sweep(root, (function() local p = {} for i, e in ipairs(list) do p[i] = e.path end return p end)())
  local later = {}
  for _, s in ipairs(steps) do
    if s.action == "rmdir" and holds_state(s.entry.path) then
      later[#later + 1] = s  -- after the state directory itself; never recorded `reverted`
    else
      local ok, err = revert_step(root, list, s, opts)
      if not ok then return nil, err end
    end
  end
  if opts.after then
    local ok, err = opts.after(steps)
    if not ok then return nil, err end
  end
  if unforced then return partial(steps, lost) end
  if opts.only then return M.forget_reverted(root, list, steps) end
  -- every restore is durable and recorded: now the backups, then the manifest
  store.remove_backups(root)
  core.fs.remove(root, manifest.BACKUPS)
  core.fs.remove(root, manifest.FINGERPRINTS)  -- images are rebuilt without VFIO now
  local ok, err, code = core.fs.remove(root, manifest.MANIFEST)
  if not ok and code ~= ENOENT then return nil, err end
  core.fs.remove(root, manifest.DIR)
  local entries = {}
  for _, s in ipairs(later) do entries[#entries + 1] = s.entry end
  -- not listed: like the state directory itself, they are vfioinit's own housekeeping
  store.remove_dirs(root, entries)
  for _, s in ipairs(later) do s.action = "unchanged" end
  return report(steps)
end

return M
