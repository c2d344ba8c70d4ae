--- vfioinit.state.store: the manifest and backups on disk (lua/vfioinit/state/manifest.lua
-- is the format): load, save, each entry's original, and the removal of what the state no
-- longer names.
local core = require("vfioinit.core")
local manifest = require("vfioinit.state.manifest")

local M = {}

local ENOENT = 2

-- load(root) -> entries (recording order) | nil, err. No manifest: {} -- unless backups
-- are lying there without one, which vfioinit never leaves: then the state is unknown.
function M.load(root)
  local text, err, code = core.fs.read(root, manifest.MANIFEST)
  if not text then
    if code ~= ENOENT then return nil, err end
    local left = 0
    for _, name in ipairs(core.fs.dir(root, manifest.BACKUPS) or {}) do
      if not name:match("^%..+%.vfioinit%-%w%w%w%w%w%w$") then left = left + 1 end
    end
    if left > 0 then return nil, manifest.damaged(1, ("missing, but %s holds %d file(s)"):format(manifest.BACKUPS, left)) end
    return {}
  end
  return manifest.parse_manifest(text)
end

-- save(root, list): atomically; no entries left -> no manifest.
function M.save(root, list)
  if #list == 0 then
    local ok, err, code = core.fs.remove(root, manifest.MANIFEST)
    if not ok and code ~= ENOENT then return nil, err end
    core.fs.remove(root, manifest.FINGERPRINTS)
    core.fs.remove(root, manifest.BACKUPS)  -- only when empty; else kept
    core.fs.remove(root, manifest.DIR)
    return true
  end
  local ok, err = core.fs.mkdirs(root, manifest.DIR, 448)
  if not ok then return nil, err end
  return core.fs.write_atomic(root, manifest.MANIFEST, manifest.serialize(list), 384)
end

function M.read_file(root, path)
  local text, err, code = core.fs.read(root, path)
  if text then return text end
  if code == ENOENT then return nil end
  return false, err
end

-- The first original of an entry: content (nil: no file) | false, err (its backup unreadable)
function M.original(root, e)
  if e.kind == "created" then return nil end
  local text, err = core.fs.read(root, e.backup)
  if not text then return false, err end
  return text
end

-- Every backup (and leftover temp) of the state dir; only once nothing names them.
function M.remove_backups(root)
  for _, name in ipairs(core.fs.dir(root, manifest.BACKUPS) or {}) do core.fs.remove(root, manifest.BACKUPS .. "/" .. name) end
end

-- Remove the directories of `dir` entries, innermost first, each only when empty.
-- Returns the set of paths removed.
function M.remove_dirs(root, entries)
  table.sort(entries, function(a, b) return #a.path > #b.path end)
  local removed = {}
  for _, e in ipairs(entries) do
    if core.fs.remove(root, e.path) then removed[e.path] = true end
  end
  return removed
end

return M
