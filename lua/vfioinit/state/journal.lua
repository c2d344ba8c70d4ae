--- vfioinit.state.journal: apply is journaled. The entries of a write are recorded with
-- `next` BEFORE the first backup and file are written, and committed (next -> last) after
-- every file is; a run that finds an uncommitted write (killed or failed apply) settles it
-- from the file itself: holding `next` means the write happened (commit), anything else
-- means it did not (drop the entry and its backup). So a record always describes the bytes
-- a successful write replaced.
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local manifest = require("vfioinit.state.manifest")
local store = require("vfioinit.state.store")
local lock = require("vfioinit.state.lock")

local M = {}

local digest = manifest.digest

-- M.settle(root, list, drop_reverted) -> new list, backups to remove, changed | nil, err.
-- Resolves writes left pending by a killed or failed apply from the files themselves.
function M.settle(root, list, drop_reverted)
  local out, gone, changed = {}, {}, false
  for _, e in ipairs(list) do
    local keep = e
    if e.next ~= "-" and e.kind == "dir" then
      -- a directory apply meant to create: there, or never made
      changed = true
      local st = core.fs.stat(root, e.path, true)
      if st and st.type == "dir" then e.last = manifest.DIR_MARK
      elseif e.last == "-" then keep = nil end
      e.next = "-"
    elseif e.next ~= "-" then
      local cur, err = store.read_file(root, e.path)
      if cur == false then return nil, err end
      changed = true
      local flags = e.flags
      if digest(cur) == e.next then  -- the write happened
        e.last, e.next = e.next, "-"
        if flags["edit-pending"] then flags.edited = true end
      elseif e.last == "-" then      -- a first write that never happened: no record
        keep = nil
      else
        e.next = "-"
      end
      flags["edit-pending"] = nil
    end
    if keep and drop_reverted and e.flags.reverted then keep = nil; changed = true end
    if keep then out[#out + 1] = keep elseif e.backup then gone[#gone + 1] = e.backup end
  end
  return out, gone, changed
end

-- commit(root, list, gone, changed) -> true | nil, err: write the settled list, then remove
-- the backups no entry names any more. With no entry
-- left the backups go first: a kill in between never leaves backups without a manifest
-- (which `load` refuses as unknown state).
function M.commit(root, list, gone, changed)
  if not changed then return true end
  -- directories alone record nothing vfioinit wrote (a failed first apply): they go too
  local dirs = {}
  for _, e in ipairs(list) do if e.kind == "dir" then dirs[#dirs + 1] = e end end
  if #dirs == #list then list = {} end
  if #list == 0 then store.remove_backups(root) end
  local ok, err = store.save(root, list)
  if not ok then return nil, err end
  for _, b in ipairs(gone) do core.fs.remove(root, b) end
  if #list == 0 then store.remove_dirs(root, dirs) end
  return true
end

-- prepare(root) -> list | nil, err: load, settle a killed apply, finish a killed revert's
-- cleanup (its restores are durable; an apply starts from the files as they are).
function M.prepare(root)
  local list, err = store.load(root)
  if not list then return nil, err end
  local out, gone, changed = M.settle(root, list, true)
  if not out then return nil, gone end
  local ok, serr = M.commit(root, out, gone, changed)
  if not ok then return nil, serr end
  return out
end

local function backup_name(root, list, path, n)
  local used = {}
  for _, e in ipairs(list) do if e.backup then used[e.backup] = true end end
  local safe = path:gsub("[^%w._-]", "_")
  while true do
    local name = ("%s/%d-%s"):format(manifest.BACKUPS, n, safe)
    if not used[name] and not core.fs.stat(root, name) then return name end
    n = n + 1
  end
end

-- The directories a write of path would create (the missing parents), outermost first.
function M.missing_dirs(root, path)
  local missing, d = {}, (util.split_path(path))
  while d and d ~= "/" and d ~= "" and not core.fs.stat(root, d, true) do
    table.insert(missing, 1, d)
    d = (util.split_path(d))
  end
  return missing
end

-- journal(root, changes) -> true | nil, err. Records the writes about to be made (`next`)
-- before anything else, then saves the originals of new entries.
function M.journal(root, changes)
  local list, err = M.prepare(root)
  if not list then return nil, err end
  local by_path, saves = {}, {}
  for _, e in ipairs(list) do by_path[e.path] = e end
  if #list == 0 and #changes > 0 then
    -- the state directory's own parents (/var/lib in a bare root): revert removes them too
    for _, dir in ipairs(M.missing_dirs(root, manifest.DIR .. "/x")) do
      if dir ~= manifest.DIR then
        list[#list + 1] = { kind = "dir", generator = "vfioinit", path = dir, last = "-", next = manifest.DIR_MARK, flags = {} }
        by_path[dir] = list[#list]
      end
    end
  end
  for _, c in ipairs(changes) do
    local e = by_path[c.path]
    if e then
      -- the file differs from what vfioinit last wrote and from the original: hand edits,
      -- which restoring the first original would drop
      if digest(c.before) ~= e.last then
        local orig = store.original(root, e)
        if orig == false or orig ~= c.before then e.flags["edit-pending"] = true end
      end
      e.next = digest(c.after)
    else
      -- the directories this write will create (plan.lua makes the missing parents), from
      -- the outermost: revert removes them again, innermost first, when they are empty
      if c.before == nil and c.after ~= nil then
        for _, dir in ipairs(M.missing_dirs(root, c.path)) do
          if not by_path[dir] then
            local de = { kind = "dir", generator = c.generator, path = dir, last = "-", next = manifest.DIR_MARK, flags = {} }
            list[#list + 1] = de
            by_path[dir] = de
          end
        end
      end
      e = { kind = c.before == nil and "created" or "saved", generator = c.generator, path = c.path,
            last = "-", next = digest(c.after), flags = {} }
      if c.before ~= nil then
        local st, serr = core.fs.stat(root, c.path)
        if not st then return nil, serr end
        e.backup, e.mode = backup_name(root, list, c.path, #list + 1), st.mode
        saves[#saves + 1] = { name = e.backup, content = c.before }
      end
      list[#list + 1] = e
      by_path[c.path] = e
    end
  end
  if #list == 0 then return true end
  local ok, serr = store.save(root, list)
  if not ok then return nil, serr end
  if #saves > 0 then
    ok, serr = core.fs.mkdirs(root, manifest.BACKUPS, 448)
    if not ok then M.finish(root); return nil, serr end
  end
  for _, s in ipairs(saves) do
    ok, serr = core.fs.write_atomic(root, s.name, s.content, 384)
    if not ok then M.finish(root); return nil, serr end
  end
  return true
end

-- finish(root) -> true | nil, err: settle the journal after the writes (or their rollback).
function M.finish(root)
  local list, err = store.load(root)
  if not list then return nil, err end
  local out, gone, changed = M.settle(root, list, false)
  if not out then return nil, gone end
  return M.commit(root, out, gone, changed)
end

-- Remove the temp files a killed run left next to `paths` (".<name>.vfioinit-XXXXXX",
-- src/fs.c temp_create), and any in the backups dir. Callers hold the lock, so no other
-- vfioinit is writing them right now.
function M.sweep(root, paths)
  local dirs = { [manifest.BACKUPS] = {}, [manifest.DIR] = { manifest = true, verified = true } }
  for _, p in ipairs(paths) do
    local dir, name = p:match("^(.*)/([^/]+)$")
    if dir then
      dir = dir == "" and "/" or dir
      dirs[dir] = dirs[dir] or {}
      dirs[dir][name] = true
    end
  end
  for dir, names in pairs(dirs) do
    for _, e in ipairs(core.fs.dir(root, dir) or {}) do
      local base = e:match("^%.(.+)%.vfioinit%-%w%w%w%w%w%w$")
      if base and (names[base] or dir == manifest.BACKUPS) then
        core.fs.remove(root, (dir == "/" and "" or dir) .. "/" .. e)
      end
    end
  end
end

-- tidy(root): for an apply with nothing to write. A killed run may have left a temp
-- file in the state dir or a write pending in the journal: sweep and settle them under
-- the lock (a clean root is only read, so a configured system stays untouched).
function M.tidy(root)
  local dirty = false
  for _, dir in ipairs({ manifest.DIR, manifest.BACKUPS }) do
    for _, name in ipairs(core.fs.dir(root, dir) or {}) do
      if name:match("^%..+%.vfioinit%-%w%w%w%w%w%w$") then dirty = true end
    end
  end
  local list = manifest.parse_manifest(core.fs.read(root, manifest.MANIFEST) or "")
  for _, e in ipairs(list or {}) do if e.next ~= "-" then dirty = true end end
  if not dirty then return true end
  return lock.with_lock(root, function()
    M.sweep(root, {})
    if list then return M.prepare(root) end
    return true
  end)
end

return M
