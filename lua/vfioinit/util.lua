-- Small pure helpers shared by the policy modules: names, sets, validation.
local M = {}

-- Lua 5.1/LuaJIT compatibility (the modules run on 5.1 through 5.4; see docs/REFERENCE.md "Lua versions").
M.unpack = table.unpack or rawget(_G, "unpack")
-- table.pack: values in 1..n, n = their count (nils included).
function M.pack(...) return { n = select("#", ...), ... } end
-- a & b for non-negative integers, without 5.3's operator (a syntax error on 5.1).
function M.band(a, b)
  local r, bit = 0, 1
  while a > 0 and b > 0 do
    if a % 2 == 1 and b % 2 == 1 then r = r + bit end
    a, b, bit = math.floor(a / 2), math.floor(b / 2), bit * 2
  end
  return r
end

-- util.VFIO and util.GPU are vfioinit.machine's lists (read through, never copied), so a
-- change to machine.GPU reaches the callers that still say util.GPU.
local machine = require("vfioinit.machine")
setmetatable(M, { __index = function(_, k)
  if k == "VFIO" or k == "GPU" then return machine[k] end
end })

-- `-` and `_` name the same module; `_` is the kernel's canonical spelling.
function M.norm(name) return (name:gsub("-", "_")) end

function M.set(list, f)
  local s = {}
  for _, v in ipairs(list) do s[f and f(v) or v] = true end
  return s
end

function M.gpu_set() return M.set(machine.GPU) end

function M.valid_module(name)
  return type(name) == "string" and name:match("^[A-Za-z0-9_-]+$") ~= nil
end

-- Validate a list of extra module names; returns the normalized list or nil, msg.
function M.check_modules(list)
  local out = {}
  for _, m in ipairs(list or {}) do
    if not M.valid_module(m) then
      return nil, ("invalid module name %q (allowed: A-Z a-z 0-9 _ -)"):format(tostring(m))
    end
    out[#out + 1] = M.norm(m)
  end
  return out
end

-- Device IDs: "vvvv:dddd" hex pairs, lower-cased; accepts a list or a comma-separated string.
function M.check_ids(ids)
  if ids == nil then return nil end
  if type(ids) == "string" then
    local t = {}
    for part in (ids .. ","):gmatch("([^,]*),") do t[#t + 1] = part end
    ids = t
  end
  local out, seen = {}, {}
  for _, id in ipairs(ids) do
    if type(id) ~= "string" or not id:match("^%x%x%x%x:%x%x%x%x$") then
      return nil, ("invalid device id %q (expected vendor:device, e.g. 10de:1b80)"):format(tostring(id))
    end
    id = id:lower()
    if not seen[id] then seen[id] = true; out[#out + 1] = id end
  end
  return out
end

function M.sorted_keys(t)
  local k = {}
  for key in pairs(t) do k[#k + 1] = key end
  table.sort(k)
  return k
end

-- "/a/b" -> "/a", "b"
function M.split_path(path)
  local dir, base = path:match("^(.*)/([^/]*)$")
  if dir == "" then dir = "/" end
  return dir, base
end

-- check_root(root) -> true | nil, reason: root must name an existing directory. Checked
-- before anything else (the lock included), so a typo reads as what it is, not as
-- "another vfioinit is running". reason: "empty path", "no such directory", "not a directory"
-- or the OS's words; callers prefix "--root X: " or "root X: ".
function M.check_root(root)
  if root == "" then return nil, "empty path" end
  if root:find("\0", 1, true) then return nil, "path contains a NUL byte" end
  local core = require("vfioinit.core")
  local st, err, code = core.fs.stat(root, "/")
  if not st then
    if code == 2 then return nil, "no such directory" end
    if code == 20 then return nil, "not a directory" end
    return nil, (tostring(err):gsub("^.-: ", ""))
  end
  if st.type ~= "dir" then return nil, "not a directory" end
  return true
end

-- Every number of seconds (--timeout, VFIOINIT_LOCK_TIMEOUT, timeout=) has one range:
-- finite, at most MAX_SECONDS (about 31 years; "inf" and "1e400" alike are refused).
M.MAX_SECONDS, M.MAX_SECONDS_TEXT = 1e9, "1e9"

-- seconds(v, positive) -> the number of seconds v (a number or its text) gives, >= 0 (> 0
-- when positive) and at most MAX_SECONDS | nil
function M.seconds(v, positive)
  local n = tonumber(v)
  if not n or n ~= n or n < 0 or n > M.MAX_SECONDS or (positive and n == 0) then return nil end
  return n
end

-- lock_timeout(text) -> seconds, nil | default, error: VFIOINIT_LOCK_TIMEOUT's value
-- (unset or empty: 900 s). Anything but M.seconds is an error the locking calls report.
function M.lock_timeout(text, default)
  default = default or 900
  if text == nil or text == "" then return default end
  local n = M.seconds(text)
  if not n then
    return default, ("VFIOINIT_LOCK_TIMEOUT=%s: expected a number of seconds >= 0 and at most %s")
      :format(text, M.MAX_SECONDS_TEXT)
  end
  return n
end

-- unique(list [, key]) -> the list without repeats (by key(v) when given), first one kept.
function M.unique(list, key)
  if list == nil then return nil end
  local out, seen = {}, {}
  for _, v in ipairs(list) do
    local k = key and key(v) or v
    if not seen[k] then seen[k] = true; out[#out + 1] = v end
  end
  return out
end

-- nul_line(text) -> the line number of text's first NUL byte, or nil (a binary file).
function M.nul_line(text)
  local nul = text:find("\0", 1, true)
  return nul and select(2, text:sub(1, nul):gsub("\n", "")) + 1
end

-- file_edit(ctx, path, edit) -> the edits of a generator whose config is the one file
-- `path`: edit(text) -> new text | nil, msg, line (an absent file reads as "");
-- nil, "PATH:LINE: msg" when edit refuses; no edit when an absent file would stay empty.
function M.file_edit(ctx, path, edit)
  local before, err = ctx.read(path)
  if err then return nil, err end
  local after, msg, line = edit(before or "")
  if not after then return nil, ("%s:%d: %s"):format(path, line or 0, msg) end
  if before == nil and after == "" then return {} end
  return { { path = path, before = before, after = after } }
end

-- member(contents, name) -> the text of image member `name` ("conf/modules") in an
-- image's contents table, whichever way the archive spelled it ("./conf/modules", "/...").
function M.member(contents, name)
  return contents[name] or contents["./" .. name] or contents["/" .. name]
end

--- lazy(name) -> a stand-in for module `name`, required on the first read of one of its
-- fields (every read after that goes to the module itself). A command loads only the
-- modules it uses: verify never loads the planner, the rebuild or the boot-loader edits.
function M.lazy(name)
  return setmetatable({}, { __index = function(t, k)
    local mod = require(name)
    setmetatable(t, { __index = mod, __newindex = mod })
    return mod[k]
  end, __newindex = function(_, k, v) require(name)[k] = v end })
end

return M
