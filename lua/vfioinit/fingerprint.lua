--[[ vfioinit.fingerprint: what an image looked like when vfioinit last read it and found
every module there, so a no-op `apply` (and `verify`, `status`) need not read a 13 MB
image again when nothing about it changed.

An entry is kept per generator and kernel in <root>/var/lib/vfioinit/verified, next to
the manifest (lua/vfioinit/state/), and only where that manifest exists: a root vfioinit never
configured gets no state dir from a read-only `verify`. It records the image's
resolved path, device, inode, size, mtime and ctime (seconds and nanoseconds), and a
`key`: the sha256 of everything else the result depends on (verify.lua `key_of`: the
required modules, the members read, the modprobe.d file expected, the generator's
config files). A lookup trusts an entry only when every one of these is equal now:
  - a touch or any write moves mtime/ctime; a write that restores mtime still moves
    ctime, which only the kernel sets; a replace by rename is a new inode;
  - a changed config, modprobe.d file or module list is a different key.
Only an image whose ctime is SETTLE seconds old is recorded, and only when a stat
before and after the read agree: a write in the same clock tick as the one before it
would not move the coarse timestamps (git's "racy clean" problem).

The file (format 1) is written atomically (core.fs.write_atomic), sealed like the
manifest, and parsed strictly: anything damaged, foreign or too large is ignored as a
whole (every image is read again and the file rewritten), never trusted.
  vfioinit-verified 1
  <generator> <kernel> <image> <dev> <ino> <size> <mtime> <mtime_ns> <ctime> <ctime_ns> <key>
  end <entry count> <sha256 of every byte above this line>
(tab-separated, text fields percent-encoded).
]]
local core = require("vfioinit.core")
local state = require("vfioinit.state.manifest")

local M = {}

M.FILE = state.FINGERPRINTS
M.HEADER = "vfioinit-verified 1"
M.MAX_BYTES = 256 * 1024   -- larger is not ours: ignored
M.MAX_ENTRIES = 512        -- generators x kernels; the oldest go first
-- Seconds an image's ctime must lie in the past to be recorded. Test builds
-- (core._TESTING) take VFIOINIT_FP_SETTLE so specs need not wait.
M.SETTLE = 3
local settle = core._TESTING and tonumber(os.getenv("VFIOINIT_FP_SETTLE") or "")
if settle then M.SETTLE = settle end

local STAT = { "dev", "ino", "size", "mtime", "mtime_ns", "ctime", "ctime_ns" }

local function enc(s) return (s:gsub("[%%\t\n\r%z]", function(c) return ("%%%02X"):format(c:byte()) end)) end
local function dec(s) return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
local function id(gen, kver) return gen .. "\0" .. kver end

-- One entry line -> entry | nil (any field out of shape: the store is damaged).
local function parse_line(line)
  local f = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
  if #f ~= 11 then return nil end
  local e = { generator = dec(f[1]), kernel = dec(f[2]), image = dec(f[3]), key = f[11] }
  if e.generator == "" or e.kernel == "" or e.image:sub(1, 1) ~= "/" then return nil end
  if #e.key ~= 64 or not e.key:match("^[0-9a-f]+$") then return nil end
  for i, name in ipairs(STAT) do
    if not f[3 + i]:match("^%-?%d+$") then return nil end
    e[name] = math.tointeger(tonumber(f[3 + i]))
    if not e[name] then return nil end
  end
  return e
end

--- parse(text) -> {entries = list, by = {[gen\0kver] = entry}} | nil, reason. Pure, never raises.
function M.parse(text)
  if type(text) ~= "string" or #text > M.MAX_BYTES then return nil, "too large or not text" end
  local body, count, sum = text:match("^(.-\n)end (%d+) (%x+)\n$")
  if not body or body:sub(1, #M.HEADER + 1) ~= M.HEADER .. "\n" then return nil, "no header or end line" end
  if core.hash.sha256(body) ~= sum then return nil, "checksum mismatch" end
  local store = { entries = {}, by = {} }
  for line in body:sub(#M.HEADER + 2):gmatch("([^\n]*)\n") do
    local e = parse_line(line)
    if not e then return nil, "bad entry" end
    local k = id(e.generator, e.kernel)
    if store.by[k] then return nil, "second entry for " .. e.generator .. " " .. e.kernel end
    store.entries[#store.entries + 1] = e
    store.by[k] = e
  end
  if tonumber(count) ~= #store.entries then return nil, "entry count mismatch" end
  return store
end

function M.serialize(store)
  local out = { M.HEADER }
  for _, e in ipairs(store.entries) do
    local f = { enc(e.generator), enc(e.kernel), enc(e.image) }
    for _, name in ipairs(STAT) do f[#f + 1] = ("%d"):format(e[name]) end
    f[#f + 1] = e.key
    out[#out + 1] = table.concat(f, "\t")
  end
  local body = table.concat(out, "\n") .. "\n"
  return body .. ("end %d %s\n"):format(#store.entries, core.hash.sha256(body))
end

--- load(root) -> store (empty when missing, unreadable or damaged: `store.ignored` says why)
function M.load(root)
  local text, err = core.fs.read(root, M.FILE, M.MAX_BYTES + 1)
  if not text then return { entries = {}, by = {}, ignored = err } end
  local store, why = M.parse(text)
  if not store then return { entries = {}, by = {}, ignored = M.FILE .. ": " .. why } end
  return store
end

--- lookup(store, gen, kver, image, st, key) -> true when the entry matches the image as it is now.
function M.lookup(store, gen, kver, image, st, key)
  local e = store.by[id(gen, kver)]
  if not e or not st or st.type ~= "file" or e.image ~= image or e.key ~= key then return false end
  for _, name in ipairs(STAT) do
    if e[name] ~= st[name] then return false end
  end
  return true
end

local function same_stat(a, b)
  if not a or not b or a.type ~= "file" or b.type ~= "file" then return false end
  for _, name in ipairs(STAT) do
    if a[name] ~= b[name] then return false end
  end
  return true
end

--- settled(st, now) -> true when the image's last change is SETTLE seconds before `now`.
function M.settled(st, now)
  return st.ctime + M.SETTLE <= (now or os.time()) and st.mtime + M.SETTLE <= (now or os.time())
end

--- record(root, store, gen, kver, image, before, after, key, now) -> true | false, why | nil, err
-- Remembers an image read between the stats `before` and `after` (equal, settled), and
-- writes the store atomically. Nothing is written where vfioinit keeps no manifest.
function M.record(root, store, gen, kver, image, before, after, key, now)
  if not same_stat(before, after) then return false, "changed while read" end
  if not M.settled(before, now) then return false, "changed too recently" end
  if not core.fs.stat(root, state.MANIFEST) then return false, "no manifest" end
  local e = { generator = gen, kernel = kver, image = image, key = key }
  for _, name in ipairs(STAT) do e[name] = before[name] end
  local k, list = id(gen, kver), {}
  for _, old in ipairs(store.entries) do
    if id(old.generator, old.kernel) ~= k then list[#list + 1] = old end
  end
  list[#list + 1] = e
  while #list > M.MAX_ENTRIES do table.remove(list, 1) end
  store.entries, store.by = list, {}
  for _, x in ipairs(list) do store.by[id(x.generator, x.kernel)] = x end
  return core.fs.write_atomic(root, M.FILE, M.serialize(store), 384)
end

return M
