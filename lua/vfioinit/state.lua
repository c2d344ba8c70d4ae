-- What vfioinit changed in a root, kept under <root>/var/lib/vfioinit so `revert`
-- can restore every file byte for byte (or remove the ones it created).
--
-- manifest: one line per file, tab-separated, fields percent-encoded:
--   saved   <generator> <path> <backup file> <octal mode>
--   created <generator> <path>
-- Only the first change to a file is recorded: later applies keep the original.
local core = require "vfioinit.core"
local util = require "vfioinit.util"

local M = {}

M.DIR = "/var/lib/vfioinit"
M.MANIFEST = M.DIR .. "/manifest"
M.BACKUPS = M.DIR .. "/backups"

local ENOENT = 2

-- One lock per root serialises apply, revert and rebuild: flock on root's own directory
-- (src/lock.c), so it creates nothing inside root and leaves nothing behind. A second
-- vfioinit waits up to LOCK_TIMEOUT seconds (env VFIOINIT_LOCK_TIMEOUT; default 900, more
-- than a rebuild's 600 s timeout), then fails with "/: locked by another process".
M.LOCK_TIMEOUT = tonumber(os.getenv("VFIOINIT_LOCK_TIMEOUT") or "") or 900
local held = {}  -- roots this process holds the lock of: with_lock is re-entrant

-- with_lock(root, fn, ...) -> fn(...)'s results, run while holding root's lock.
function M.with_lock(root, fn, ...)
  local key = root:gsub("/+$", "")
  if held[key] then return fn(...) end
  local lk, err = core.lock(root, "/", M.LOCK_TIMEOUT)
  if not lk then return nil, root .. ": another vfioinit is running on this root (" .. err .. ")" end
  held[key] = true
  local res = util.pack(pcall(fn, ...))
  held[key] = nil
  lk:unlock()
  if not res[1] then error(res[2], 0) end
  return util.unpack(res, 2, res.n)
end

local function enc(s) return (s:gsub("[%%\t\n]", function(c) return ("%%%02X"):format(c:byte()) end)) end
local function dec(s) return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end

-- parse_manifest(text) -> entries (list, in recording order), by_path | nil, "LINE: reason".
-- Pure (no root, no I/O) and never raises: tools/fuzz drives it (fuzz/manifest_parse.c).
function M.parse_manifest(text)
  local list, by_path, n = {}, {}, 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = dec(field) end
    local e
    if f[1] == "saved" and #f == 5 then
      e = { kind = "saved", generator = f[2], path = f[3], backup = f[4], mode = tonumber(f[5], 8) }
    elseif f[1] == "created" and #f == 3 then
      e = { kind = "created", generator = f[2], path = f[3] }
    else
      return nil, ("%d: unreadable manifest line"):format(n)
    end
    list[#list + 1] = e
    by_path[e.path] = e
  end
  return list, by_path
end

-- load(root) -> entries (list, in recording order), by_path | nil, err
function M.load(root)
  local text, err, code = core.read(root, M.MANIFEST)
  if not text then
    if code == ENOENT then return {}, {} end
    return nil, err
  end
  local list, by_path = M.parse_manifest(text)
  if not list then return nil, M.MANIFEST .. ":" .. by_path end
  return list, by_path
end

local function serialize(list)
  local out = {}
  for _, e in ipairs(list) do
    if e.kind == "saved" then
      out[#out + 1] = table.concat({ "saved", enc(e.generator), enc(e.path), enc(e.backup), ("%o"):format(e.mode) }, "\t")
    else
      out[#out + 1] = table.concat({ "created", enc(e.generator), enc(e.path) }, "\t")
    end
  end
  return table.concat(out, "\n") .. (#out > 0 and "\n" or "")
end

-- record(root, changes) -> true | nil, err: save originals of files not yet recorded.
function M.record(root, changes)
  local list, by_path = M.load(root)
  if not list then return nil, by_path end
  local added = false
  for _, c in ipairs(changes) do
    if not by_path[c.path] then
      local e
      if c.before == nil then
        e = { kind = "created", generator = c.generator, path = c.path }
      else
        local st, err = core.stat(root, c.path)
        if not st then return nil, err end
        local ok, merr = core.mkdirs(root, M.BACKUPS, 448)
        if not ok then return nil, merr end
        local name = M.BACKUPS .. "/" .. (#list + 1) .. "-" .. c.path:gsub("[^%w._-]", "_")
        local wok, werr = core.write_atomic(root, name, c.before, 384)
        if not wok then return nil, werr end
        e = { kind = "saved", generator = c.generator, path = c.path, backup = name, mode = st.mode }
      end
      list[#list + 1] = e
      by_path[c.path] = e
      added = true
    end
  end
  if added then
    local ok, err = core.mkdirs(root, M.DIR, 448)
    if not ok then return nil, err end
    return core.write_atomic(root, M.MANIFEST, serialize(list), 384)
  end
  return true
end

-- Remove the temp files a killed run left next to `paths` (".<name>.vfioinit-XXXXXX",
-- src/fs.c temp_create), and any in the backups dir. Callers hold the lock, so no other
-- vfioinit is writing them right now.
function M.sweep(root, paths)
  local dirs = { [M.BACKUPS] = {}, [M.DIR] = { manifest = true } }
  for _, p in ipairs(paths) do
    local dir, name = p:match("^(.*)/([^/]+)$")
    if dir then
      dir = dir == "" and "/" or dir
      dirs[dir] = dirs[dir] or {}
      dirs[dir][name] = true
    end
  end
  for dir, names in pairs(dirs) do
    for _, e in ipairs(core.dir(root, dir) or {}) do
      local base = e:match("^%.(.+)%.vfioinit%-%w%w%w%w%w%w$")
      if base and (names[base] or dir == M.BACKUPS) then
        core.remove(root, (dir == "/" and "" or dir) .. "/" .. e)
      end
    end
  end
end

-- revert(root) -> list of reverted entries | nil, err. Validates every backup first.
function M.revert(root)
  local list, err = M.load(root)
  if not list then return nil, err end
  local paths = {}
  for i, e in ipairs(list) do paths[i] = e.path end
  M.sweep(root, paths)
  local contents = {}
  for i, e in ipairs(list) do
    if e.kind == "saved" then
      local text, rerr = core.read(root, e.backup)
      if not text then return nil, rerr end
      contents[i] = text
    end
  end
  for i = #list, 1, -1 do
    local e = list[i]
    if e.kind == "saved" then
      local cur = core.read(root, e.path)
      if cur ~= contents[i] then
        local ok, werr = core.write_atomic(root, e.path, contents[i], e.mode)
        if not ok then return nil, werr end
      end
    else
      local ok, rerr, code = core.remove(root, e.path)
      if not ok and code ~= ENOENT then return nil, rerr end
    end
  end
  for _, e in ipairs(list) do
    if e.backup then core.remove(root, e.backup) end
  end
  -- backups a killed apply wrote before its manifest named them
  for _, name in ipairs(core.dir(root, M.BACKUPS) or {}) do core.remove(root, M.BACKUPS .. "/" .. name) end
  core.remove(root, M.BACKUPS)
  core.remove(root, M.MANIFEST)
  core.remove(root, M.DIR)
  return list
end

return M
