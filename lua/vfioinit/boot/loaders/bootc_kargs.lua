-- bootc image build root: the kernel arguments of an image are the `kargs` arrays of the TOML
-- files in /usr/lib/bootc/kargs.d, read in file-name order when bootc installs or updates
-- (bootc's "Kernel arguments" docs; `match-architectures` limits a file to some
-- architectures). vfioinit owns /usr/lib/bootc/kargs.d/vfioinit.toml: the words the other
-- files lack, a parameter they hold with a list value merged into one word of ours (read later,
-- it wins); a value vfioinit must not override there is refused. Same ids rule as every
-- target (ownids.lua): --ids replaces the ids of ours, no --ids keeps them. Only in an image
-- build root: a deployed system's /usr is read-only (rpm_ostree_kargs, ostree_kargs).
local cmdline = require("vfioinit.edit.cmdline")
local ownids = require("vfioinit.boot.cmdline.ownids")

-- A target of ostree image roots only; no chain carries its words before bootc installs the
-- image: its own `readback` reads kargs.d.
local M = { name = "bootc_kargs", order = 92, ostree = true, reads = {}, title = "bootc kargs.d" }

M.DIR = "/usr/lib/bootc/kargs.d"
M.FILE = M.DIR .. "/vfioinit.toml"

-- One TOML basic ("...") or literal ('...') string at text[i]: value, next index | nil, why.
local function str(text, i)
  local q = text:sub(i, i)
  if q == "'" then
    local j = text:find("'", i + 1, true)
    if not j then return nil, "unterminated string" end
    return text:sub(i + 1, j - 1), j + 1
  end
  local out, j = {}, i + 1
  while j <= #text do
    local c = text:sub(j, j)
    if c == '"' then return table.concat(out), j + 1 end
    if c == "\n" then break end
    if c == "\\" then
      local e = text:sub(j + 1, j + 1)
      local map = { ['"'] = '"', ["\\"] = "\\", n = "\n", t = "\t" }
      if not map[e] then return nil, "escape \\" .. e .. " vfioinit does not read" end
      out[#out + 1] = map[e]; j = j + 2
    else out[#out + 1] = c; j = j + 1 end
  end
  return nil, "unterminated string"
end

-- parse(text) -> {kargs={...}|nil, arches={...}|nil} | nil, why, line: the keys kargs.d files
-- have (string arrays, `#` comments); anything else is refused rather than guessed.
function M.parse(text)
  local out, i = {}, 1
  local function line_at(p) return select(2, text:sub(1, p):gsub("\n", "")) + 1 end
  local function skip(p)
    while p <= #text do
      local c = text:sub(p, p)
      if c == "#" then p = (text:find("\n", p, true) or #text) + 1
      elseif c:match("%s") then p = p + 1
      else break end
    end
    return p
  end
  while true do
    i = skip(i)
    if i > #text then return out end
    local key, eq = text:match("^([%w_-]+)%s*=%s*()", i)
    if not key then return nil, "not a `key = [ \"...\" ]` line", line_at(i) end
    if text:sub(eq, eq) ~= "[" then return nil, key .. ": a list of strings expected", line_at(eq) end
    local list, j = {}, skip(eq + 1)
    while text:sub(j, j) ~= "]" do
      local v, nj = str(text, j)
      if not v then return nil, nj or "a string expected", line_at(j) end
      list[#list + 1] = v
      j = skip(nj)
      if text:sub(j, j) == "," then j = skip(j + 1)
      elseif text:sub(j, j) ~= "]" then return nil, "`,` or `]` expected", line_at(j) end
    end
    if key == "kargs" then out.kargs = list
    elseif key == "match-architectures" then out.arches = list
    else return nil, key .. ": not a key of bootc's kargs.d", line_at(i) end
    i = j + 1
  end
end

-- The words of the other kargs.d files in bootc's order, or nil, "PATH:LINE: why".
local function others(ctx)
  local words = {}
  for _, n in ipairs(ctx.dir(M.DIR) or {}) do
    local p = M.DIR .. "/" .. n
    if n:match("%.toml$") and p ~= M.FILE then
      local text, err = ctx.read(p)
      if err then return nil, err end
      local t, why, line = M.parse(text or "")
      if not t then return nil, ("%s:%d: %s"):format(p, line, why) end
      for _, w in ipairs(t.kargs or {}) do words[#words + 1] = w end
    end
  end
  return table.concat(words, " ")
end

local function toml(words)
  local q = {}
  for i, w in ipairs(words) do q[i] = '"' .. w:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"' end
  return "# Written by vfioinit (--cmdline): bootc puts these on the kernel command line. "
    .. "`vfioinit revert` removes this file.\nkargs = [" .. table.concat(q, ", ") .. "]\n"
end

function M.detect(ctx)
  local o = ctx.ostree
  return o ~= nil and o.kind == "image" and o.manager == "bootc"
end

function M.files() return { M.FILE } end

function M.edits(ctx, wants)
  local line, err = others(ctx)
  if not line then return nil, err end
  local before, rerr = ctx.read(M.FILE)
  if rerr then return nil, rerr end
  local mine = {}
  if before then
    local t, why, l = M.parse(before)
    if not t then return nil, ("%s:%d: %s"):format(M.FILE, l, why) end
    mine = t.kargs or {}
  end
  -- an apply without ids keeps the ids an earlier one put here
  local list = {}
  for _, w in ipairs(wants) do list[#list + 1] = w end
  if not ownids.wanted(wants) then
    for _, w in ipairs(mine) do
      local v = cmdline.find(w, ownids.NAME)
      if v and v.value then list[#list + 1] = { name = ownids.NAME, value = v.value, list = true } end
    end
  end
  local _, added = cmdline.add(line, list)
  if not added then return nil, ("%s: %s"):format(M.DIR, select(2, cmdline.add(line, list))) end
  local after = #added > 0 and toml(added) or nil
  if after == before then return {} end
  return { { path = M.FILE, before = before, after = after } }
end

function M.regenerate() return nil end

-- what bootc will put on the line: every kargs.d file's words, in order
function M.readback(ctx, wants)
  local words, err = {}, nil
  for _, n in ipairs(ctx.dir(M.DIR) or {}) do
    local p = M.DIR .. "/" .. n
    local t = n:match("%.toml$") and M.parse(ctx.read(p) or "")
    for _, w in ipairs(t and t.kargs or {}) do words[#words + 1] = w end
  end
  local line = table.concat(words, " ")
  local ok, miss = cmdline.has(line, wants)
  if err then return nil, err end
  return { { entry = "bootc: " .. M.DIR, source = M.DIR, cmdline = line, ok = ok, missing = miss } }
end

return M
