--[[ vfioinit.state.manifest: where vfioinit's state lives (<root>/var/lib/vfioinit) and the
manifest's codec (pure: no I/O, never raises).

manifest (format 3), written atomically, damage detectable:
  vfioinit-manifest 3
  <kind> <generator> <path> <backup> <mode> <last> <next> <flags>     (tab-separated)
  end <entry count> <sha256 of every byte above this line>             (space-separated)
Fields are percent-encoded (%, tab, newline, CR, NUL). kind: `saved` (the first original
is the file <backup>, mode <mode> octal) or `created` (there was no file; backup and
mode are `-`). last: sha256 of the bytes vfioinit last wrote there, `absent` when it
removed the file, `-` while a first write is pending. next: the same for a write in
progress (`-`: none). flags (`-` or comma-separated): `edited` (a person changed the
file between two applies), `edit-pending` (the same, for the write in progress),
`reverted` (a revert restored it; the entry goes once every entry is reverted).
kind `dir` (new in format 3; format 2, without it, is still read): a directory apply
created for a new file (backup and mode `-`, last/next `dir` instead of a checksum);
revert removes it once it is empty, never otherwise.
]]
local core = require("vfioinit.core")
local util = require("vfioinit.util")

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
M.DIR_MARK = "dir"  -- a `dir` entry's last/next: the directory is there

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

return M
