-- What vfioinit changed in a root, kept under <root>/var/lib/vfioinit so `revert` can
-- restore every file byte for byte (or remove the ones it created) -- but only files
-- that still hold exactly what vfioinit last wrote: a later hand edit is never lost.
--
-- manifest (format 3), written atomically, damage detectable:
--   vfioinit-manifest 3
--   <kind> <generator> <path> <backup> <mode> <last> <next> <flags>     (tab-separated)
--   end <entry count> <sha256 of every byte above this line>             (space-separated)
-- Fields are percent-encoded (%, tab, newline, CR, NUL). kind: `saved` (the first original
-- is the file <backup>, mode <mode> octal) or `created` (there was no file; backup and
-- mode are `-`). last: sha256 of the bytes vfioinit last wrote there, `absent` when it
-- removed the file, `-` while a first write is pending. next: the same for a write in
-- progress (`-`: none). flags (`-` or comma-separated): `edited` (a person changed the
-- file between two applies), `edit-pending` (the same, for the write in progress),
-- `reverted` (a revert restored it; the entry goes once every entry is reverted).
-- kind `dir` (new in format 3; format 2, without it, is still read): a directory apply created for a new file (backup and mode `-`, last/next
-- `dir` instead of a checksum); revert removes it once it is empty, never otherwise.
--
-- apply is journaled: the entries of a write are recorded with `next` BEFORE the first
-- backup and file are written, and committed (next -> last) after every file is; a run
-- that finds an uncommitted write (killed or failed apply) settles it from the file
-- itself: holding `next` means the write happened (commit), anything else means it did
-- not (drop the entry and its backup). So a record always describes the bytes a
-- successful write replaced. revert marks each entry `reverted` once its restore is
-- durable, and removes backups, then the manifest, only when all are: a killed revert is
-- resumed by the next one. An entry whose backup cannot be read stays recorded (the others
-- are reverted) until a forced revert forgets it.
local core = require "vfioinit.core"
local util = require "vfioinit.util"

local M = {}

M.DIR = "/var/lib/vfioinit"
M.MANIFEST = M.DIR .. "/manifest"
M.BACKUPS = M.DIR .. "/backups"
M.FINGERPRINTS = M.DIR .. "/verified"  -- lua/vfioinit/fingerprint.lua: a cache, goes with the manifest
M.HEADER = "vfioinit-manifest 3"
-- Formats read: 2 is 3 without `dir` entries. An older vfioinit (format 2 only) refuses a
-- format-3 manifest as "unknown format 3", not as a damaged one it should have read.
local FORMATS = { ["vfioinit-manifest 2"] = true, [M.HEADER] = true }
M.EDITED_SUFFIX = ".vfioinit-edited"

local ENOENT = 2

-- One lock per root serialises apply, revert and rebuild: flock on root's own directory
-- (src/lock.c), so it creates nothing inside root and leaves nothing behind. A second
-- vfioinit waits up to LOCK_TIMEOUT seconds (env VFIOINIT_LOCK_TIMEOUT; default 900, more
-- than a rebuild's 600 s timeout), then fails with "/: locked by another process".
M.LOCK_TIMEOUT, M.LOCK_TIMEOUT_ERROR = util.lock_timeout(os.getenv("VFIOINIT_LOCK_TIMEOUT"), 900)
local held = {}  -- roots this process holds the lock of: with_lock is re-entrant

-- with_lock(root, fn, ...) -> fn(...)'s results, run while holding root's lock.
function M.with_lock(root, fn, ...)
  local key = root:gsub("/+$", "")
  if held[key] then return fn(...) end
  local lk, err = core.lock.acquire(root, "/", M.LOCK_TIMEOUT)
  if not lk then return nil, root .. ": another vfioinit is running on this root (" .. err .. ")" end
  held[key] = true
  local res = util.pack(pcall(fn, ...))
  held[key] = nil
  lk:unlock()
  if not res[1] then error(res[2], 0) end
  return util.unpack(res, 2, res.n)
end

local function enc(s) return (s:gsub("[%%\t\n\r%z]", function(c) return ("%%%02X"):format(c:byte()) end)) end
local function dec(s) return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end

-- sha256 of a file's content; `absent` for no file.
local function digest(content)
  if content == nil then return "absent" end
  return core.hash.sha256(content)
end
M.digest = digest

-- The one message for state vfioinit cannot trust: names the way out, changes nothing.
function M.damaged(line, reason)
  return ("%s:%d: damaged state (%s); nothing was changed. Inspect it, or move %s aside to start "
    .. "afresh (the backups under it hold the originals)"):format(M.MANIFEST, line, reason, M.DIR)
end

---------------------------------------------------------------------------
-- Parsing (pure: no I/O, never raises)

-- An absolute path without `.`/`..` components, empty components, NUL or newline.
local function clean_path(p)
  if p:sub(1, 1) ~= "/" or p == "/" or p:find("[%z\n]") or p:find("//", 1, true) or p:sub(-1) == "/" then
    return false
  end
  for comp in p:gmatch("[^/]+") do
    if comp == "." or comp == ".." then return false end
  end
  return true
end

local KINDS = { saved = true, created = true, dir = true }
M.DIR_MARK = "dir"  -- a `dir` entry's last/next: the directory is there
local FLAGS = { edited = true, ["edit-pending"] = true, reverted = true }

local function check_hash(v, allow_none)
  return (#v == 64 and v:match("^[0-9a-f]+$")) or v == "absent" or (allow_none and v == "-")
end

-- One entry line's 8 fields -> entry | nil, reason
local function parse_entry(f)
  local e = { kind = f[1], generator = f[2], path = f[3], backup = f[4], last = f[6], next = f[7], flags = {} }
  if not KINDS[e.kind] then return nil, "unknown entry kind" end
  if e.generator == "" or e.generator:find("[%c]") then return nil, "bad generator name" end
  if not clean_path(e.path) then return nil, "path not absolute or leaves the root" end
  if e.kind == "dir" then
    if e.backup ~= "-" or f[5] ~= "-" then return nil, "dir entry with a backup" end
    if (e.last ~= "-" and e.last ~= M.DIR_MARK) or (e.next ~= "-" and e.next ~= M.DIR_MARK) then
      return nil, "bad dir entry state"
    end
    e.backup = nil
  elseif e.kind == "saved" then
    local name = e.backup:sub(#M.BACKUPS + 2)
    if e.backup:sub(1, #M.BACKUPS + 1) ~= M.BACKUPS .. "/" or name == "" or name:find("/", 1, true)
      or name == "." or name == ".." or name:find("[%z\n]") then
      return nil, "backup outside " .. M.BACKUPS
    end
    if not f[5]:match("^[0-7]+$") or #f[5] > 5 or tonumber(f[5], 8) > 4095 then return nil, "bad mode" end
    e.mode = tonumber(f[5], 8)
  else
    if e.backup ~= "-" or f[5] ~= "-" then return nil, "created entry with a backup" end
    e.backup = nil
  end
  if e.kind ~= "dir" and (not check_hash(e.last, true) or not check_hash(e.next, true)) then
    return nil, "bad checksum field"
  end
  if e.last == "-" and e.next == "-" then return nil, "entry with no write" end
  if f[8] ~= "-" then
    for flag in (f[8] .. ","):gmatch("([^,]*),") do
      if not FLAGS[flag] then return nil, "unknown flag" end
      e.flags[flag] = true
    end
  end
  return e
end

local function parse(text)
  if type(text) ~= "string" then return nil, M.damaged(1, "not text") end
  if text == "" then return nil, M.damaged(1, "empty file") end
  local lines, pos = {}, 1
  while pos <= #text do
    local nl = text:find("\n", pos, true)
    if not nl then return nil, M.damaged(#lines + 1, "truncated: last line has no newline") end
    lines[#lines + 1] = { text = text:sub(pos, nl - 1), at = pos }
    pos = nl + 1
  end
  if not FORMATS[lines[1].text] then
    if lines[1].text:match("^saved\t") or lines[1].text:match("^created\t") then
      return nil, M.damaged(1, "format 1, from an older vfioinit")
    end
    local v = lines[1].text:match("^vfioinit%-manifest (.*)$")
    return nil, M.damaged(1, v and ("unknown format " .. v:sub(1, 20)) or "no '" .. M.HEADER .. "' header")
  end
  local last = lines[#lines]
  local count, sum = last.text:match("^end (%d+) (%x+)$")
  if not count or #lines < 2 then return nil, M.damaged(#lines, "no end line: truncated") end
  if core.hash.sha256(text:sub(1, last.at - 1)) ~= sum then return nil, M.damaged(#lines, "checksum mismatch") end
  if tonumber(count) ~= #lines - 2 then return nil, M.damaged(#lines, "entry count mismatch") end
  local list, seen = {}, {}
  for i = 2, #lines - 1 do
    local f = {}
    for field in (lines[i].text .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = dec(field) end
    if #f ~= 8 then return nil, M.damaged(i, "entry with " .. #f .. " fields, 8 expected") end
    local e, why = parse_entry(f)
    if not e then return nil, M.damaged(i, why) end
    if seen[e.path] then return nil, M.damaged(i, "second entry for " .. e.path) end
    seen[e.path] = true
    if e.backup then
      if seen[e.backup] then return nil, M.damaged(i, "backup shared by two entries") end
      seen[e.backup] = true
    end
    list[#list + 1] = e
  end
  return list
end

--- parse_manifest(text) -> list of entries | nil, "MANIFEST:LINE: damaged state (...)..."
-- Pure; never raises, whatever the bytes.
function M.parse_manifest(text)
  local ok, list, err = pcall(parse, text)
  if not ok then return nil, M.damaged(1, "unreadable") end
  return list, err
end

function M.serialize(list)
  local out = { M.HEADER }
  for _, e in ipairs(list) do
    local flags = util.sorted_keys(e.flags)
    out[#out + 1] = table.concat({ e.kind, enc(e.generator), enc(e.path), e.backup and enc(e.backup) or "-",
      e.mode and ("%o"):format(e.mode) or "-", e.last, e.next, #flags > 0 and table.concat(flags, ",") or "-" }, "\t")
  end
  local body = table.concat(out, "\n") .. "\n"
  return body .. ("end %d %s\n"):format(#list, core.hash.sha256(body))
end

---------------------------------------------------------------------------
-- Loading and saving

-- load(root) -> entries (recording order) | nil, err. No manifest: {} -- unless backups
-- are lying there without one, which vfioinit never leaves: then the state is unknown.
function M.load(root)
  local text, err, code = core.fs.read(root, M.MANIFEST)
  if not text then
    if code ~= ENOENT then return nil, err end
    local left = 0
    for _, name in ipairs(core.fs.dir(root, M.BACKUPS) or {}) do
      if not name:match("^%..+%.vfioinit%-%w%w%w%w%w%w$") then left = left + 1 end
    end
    if left > 0 then return nil, M.damaged(1, ("missing, but %s holds %d file(s)"):format(M.BACKUPS, left)) end
    return {}
  end
  return M.parse_manifest(text)
end

-- save(root, list): atomically; no entries left -> no manifest.
function M.save(root, list)
  if #list == 0 then
    local ok, err, code = core.fs.remove(root, M.MANIFEST)
    if not ok and code ~= ENOENT then return nil, err end
    core.fs.remove(root, M.FINGERPRINTS)
    core.fs.remove(root, M.BACKUPS)  -- only when empty; else kept
    core.fs.remove(root, M.DIR)
    return true
  end
  local ok, err = core.fs.mkdirs(root, M.DIR, 448)
  if not ok then return nil, err end
  return core.fs.write_atomic(root, M.MANIFEST, M.serialize(list), 384)
end

local function read_file(root, path)
  local text, err, code = core.fs.read(root, path)
  if text then return text end
  if code == ENOENT then return nil end
  return false, err
end

-- The first original of an entry: content (nil: no file) | false, err (its backup unreadable)
local function original(root, e)
  if e.kind == "created" then return nil end
  local text, err = core.fs.read(root, e.backup)
  if not text then return false, err end
  return text
end

---------------------------------------------------------------------------
-- The apply journal

-- settle(root, list, drop_reverted) -> new list, backups to remove, changed | nil, err.
-- Resolves writes left pending by a killed or failed apply from the files themselves.
local function settle(root, list, drop_reverted)
  local out, gone, changed = {}, {}, false
  for _, e in ipairs(list) do
    local keep = e
    if e.next ~= "-" and e.kind == "dir" then
      -- a directory apply meant to create: there, or never made
      changed = true
      local st = core.fs.stat(root, e.path, true)
      if st and st.type == "dir" then e.last = M.DIR_MARK
      elseif e.last == "-" then keep = nil end
      e.next = "-"
    elseif e.next ~= "-" then
      local cur, err = read_file(root, e.path)
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

-- Every backup (and leftover temp) of the state dir; only once nothing names them.
local function remove_backups(root)
  for _, name in ipairs(core.fs.dir(root, M.BACKUPS) or {}) do core.fs.remove(root, M.BACKUPS .. "/" .. name) end
end

-- Write the settled list, then remove the backups no entry names any more. With no entry
-- left the backups go first: a kill in between never leaves backups without a manifest
-- (which `load` refuses as unknown state).
-- Remove the directories of `dir` entries, innermost first, each only when empty.
-- Returns the set of paths removed.
local function remove_dirs(root, entries)
  table.sort(entries, function(a, b) return #a.path > #b.path end)
  local removed = {}
  for _, e in ipairs(entries) do
    if core.fs.remove(root, e.path) then removed[e.path] = true end
  end
  return removed
end

-- Is dir an ancestor of the state directory (made when the first manifest was saved)?
local function holds_state(path) return M.DIR:sub(1, #path + 1) == path .. "/" end

local function store(root, list, gone, changed)
  if not changed then return true end
  -- directories alone record nothing vfioinit wrote (a failed first apply): they go too
  local dirs = {}
  for _, e in ipairs(list) do if e.kind == "dir" then dirs[#dirs + 1] = e end end
  if #dirs == #list then list = {} end
  if #list == 0 then remove_backups(root) end
  local ok, err = M.save(root, list)
  if not ok then return nil, err end
  for _, b in ipairs(gone) do core.fs.remove(root, b) end
  if #list == 0 then remove_dirs(root, dirs) end
  return true
end

-- prepare(root) -> list | nil, err: load, settle a killed apply, finish a killed revert's
-- cleanup (its restores are durable; an apply starts from the files as they are).
function M.prepare(root)
  local list, err = M.load(root)
  if not list then return nil, err end
  local out, gone, changed = settle(root, list, true)
  if not out then return nil, gone end
  local ok, serr = store(root, out, gone, changed)
  if not ok then return nil, serr end
  return out
end

local function backup_name(root, list, path, n)
  local used = {}
  for _, e in ipairs(list) do if e.backup then used[e.backup] = true end end
  local safe = path:gsub("[^%w._-]", "_")
  while true do
    local name = ("%s/%d-%s"):format(M.BACKUPS, n, safe)
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
    for _, dir in ipairs(M.missing_dirs(root, M.DIR .. "/x")) do
      if dir ~= M.DIR then
        list[#list + 1] = { kind = "dir", generator = "vfioinit", path = dir, last = "-", next = M.DIR_MARK, flags = {} }
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
        local orig = original(root, e)
        if orig == false or orig ~= c.before then e.flags["edit-pending"] = true end
      end
      e.next = digest(c.after)
    else
      -- the directories this write will create (plan.lua makes the missing parents), from
      -- the outermost: revert removes them again, innermost first, when they are empty
      if c.before == nil and c.after ~= nil then
        for _, dir in ipairs(M.missing_dirs(root, c.path)) do
          if not by_path[dir] then
            local de = { kind = "dir", generator = c.generator, path = dir, last = "-", next = M.DIR_MARK, flags = {} }
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
  local ok, serr = M.save(root, list)
  if not ok then return nil, serr end
  if #saves > 0 then
    ok, serr = core.fs.mkdirs(root, M.BACKUPS, 448)
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
  local list, err = M.load(root)
  if not list then return nil, err end
  local out, gone, changed = settle(root, list, false)
  if not out then return nil, gone end
  return store(root, out, gone, changed)
end

-- Remove the temp files a killed run left next to `paths` (".<name>.vfioinit-XXXXXX",
-- src/fs.c temp_create), and any in the backups dir. Callers hold the lock, so no other
-- vfioinit is writing them right now.
function M.sweep(root, paths)
  local dirs = { [M.BACKUPS] = {}, [M.DIR] = { manifest = true, verified = true } }
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
      if base and (names[base] or dir == M.BACKUPS) then
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
  for _, dir in ipairs({ M.DIR, M.BACKUPS }) do
    for _, name in ipairs(core.fs.dir(root, dir) or {}) do
      if name:match("^%..+%.vfioinit%-%w%w%w%w%w%w$") then dirty = true end
    end
  end
  local list = M.parse_manifest(core.fs.read(root, M.MANIFEST) or "")
  for _, e in ipairs(list or {}) do if e.next ~= "-" then dirty = true end end
  if not dirty then return true end
  return M.with_lock(root, function()
    M.sweep(root, {})
    if list then return M.prepare(root) end
    return true
  end)
end

---------------------------------------------------------------------------
-- revert

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
  local cur, err = read_file(root, e.path)
  if cur == false then return nil, err end
  local orig, oerr = original(root, e)
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
  local name, n = path .. M.EDITED_SUFFIX, 1
  while core.fs.stat(root, name) do name, n = ("%s%s.%d"):format(path, M.EDITED_SUFFIX, n), n + 1 end
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
        :format(r.path, r.reason, r.path, M.EDITED_SUFFIX)
    end
  end
  return table.concat(lines, "\n")
end

-- plan_revert(root, opts) -> list, steps, lost | nil, err, refused. Writes nothing. A file
-- edited since vfioinit wrote it refuses the whole revert (unless forced); a file whose
-- original is lost (`lost`) only its own restore.
local function plan_revert(root, opts)
  local list, err = M.load(root)
  if not list then return nil, err end
  -- a write left pending by a killed apply is settled first (in memory only here)
  local settled, serr = settle(root, list, false)
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
  return M.save(root, list)
end

-- A partial revert (`only`) is done: its entries leave the manifest (with their backups),
-- the others stay recorded.
function M.forget_reverted(root, list, steps)
  local keep, gone = {}, {}
  for _, e in ipairs(list) do
    if not e.flags.reverted then keep[#keep + 1] = e elseif e.backup then gone[#gone + 1] = e.backup end
  end
  local ok, err = store(root, keep, gone, true)
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
  M.sweep(root, (function() local p = {} for i, e in ipairs(list) do p[i] = e.path end return p end)())
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
  remove_backups(root)
  core.fs.remove(root, M.BACKUPS)
  core.fs.remove(root, M.FINGERPRINTS)  -- images are rebuilt without VFIO now
  local ok, err, code = core.fs.remove(root, M.MANIFEST)
  if not ok and code ~= ENOENT then return nil, err end
  core.fs.remove(root, M.DIR)
  local entries = {}
  for _, s in ipairs(later) do entries[#entries + 1] = s.entry end
  -- not listed: like the state directory itself, they are vfioinit's own housekeeping
  remove_dirs(root, entries)
  for _, s in ipairs(later) do s.action = "unchanged" end
  return report(steps)
end

return M
