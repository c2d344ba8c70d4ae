-- Minimal JSON encoder for the CLI's --json output (no decoder needed).
-- Tables with keys 1..n are arrays (an empty table too: []); other tables are objects with sorted keys.
local M = {}

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- math.type is 5.3+; on 5.1/LuaJIT every number is a float and integral ones print as integers.
local mtype = math.type or function(v) return v == math.floor(v) and v >= -2^53 and v <= 2^53 and "integer" or "float" end

-- Length of the well-formed UTF-8 sequence (RFC 3629) starting at byte i, or nil: no
-- overlong forms, no surrogates (ED A0..BF), nothing above U+10FFFF.
local function utf8_len(s, i)
  local c = s:byte(i)
  local len, lo, hi = nil, 0x80, 0xBF
  if c >= 0xC2 and c <= 0xDF then len = 2
  elseif c >= 0xE0 and c <= 0xEF then len = 3
  elseif c >= 0xF0 and c <= 0xF4 then len = 4 end
  if not len or i + len - 1 > #s then return nil end
  if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F
  elseif c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
  local c2 = s:byte(i + 1)
  if c2 < lo or c2 > hi then return nil end
  for j = i + 2, i + len - 1 do
    local b = s:byte(j)
    if b < 0x80 or b > 0xBF then return nil end
  end
  return len
end

-- Strings are bytes (config files, os-release, paths) and need not be UTF-8, but JSON
-- text must be: every byte that does not belong to a well-formed UTF-8 sequence becomes
-- one U+FFFD, written as the escape \ufffd. Valid UTF-8 passes through unchanged.
local function valid_utf8(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, start, n = {}, 1, 1, #s
  while i <= n do
    if s:byte(i) < 0x80 then
      i = i + 1
    else
      local len = utf8_len(s, i)
      if len then
        i = i + len
      else
        out[#out + 1] = s:sub(start, i - 1)
        out[#out + 1] = "\\ufffd"
        i = i + 1
        start = i
      end
    end
  end
  out[#out + 1] = s:sub(start)
  return table.concat(out)
end
M.valid_utf8 = valid_utf8

local function str(s)
  return '"' .. valid_utf8((s:gsub('[%c"\\]', function(c)
    return escapes[c] or ("\\u%04x"):format(c:byte())
  end))) .. '"'
end

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k <= 0 or k % 1 ~= 0 then return false end
    n = n + 1
  end
  for i = 1, n do if t[i] == nil then return false end end
  return true, n
end

local encode

function encode(v, out)
  local t = type(v)
  if v == nil then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then out[#out + 1] = "null"
    elseif mtype(v) == "integer" then out[#out + 1] = tostring(v)
    else out[#out + 1] = ("%.14g"):format(v) end
  elseif t == "string" then out[#out + 1] = str(v)
  elseif t == "table" then
    local arr, n = is_array(v)
    if arr then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k, val in pairs(v) do
        if type(val) ~= "function" and type(val) ~= "userdata" then keys[#keys + 1] = tostring(k) end
      end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = str(k) .. ":"
        local val = v[k]
        if val == nil then val = v[tonumber(k)] end
        encode(val, out)
      end
      out[#out + 1] = "}"
    end
  else
    out[#out + 1] = "null"
  end
end

function M.encode(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

return M
