-- GRUB's command-line variables as grub-mkconfig sees them: /etc/default/grub, then
-- /etc/default/grub.d/*.cfg in glob order (Debian, Ubuntu), each sourced by /bin/sh.
-- `evaluate` gives each variable's value, the assignments it is made of and the pieces of
-- text it is built from; `word_at` finds the text of one word in the files. Only what can
-- be known without running the shell is accepted: plain top-level assignments (the shapes
-- mkinitcpio.conf is held to, lua/vfioinit/edit/shellvar.lua), a quoted or plain literal, and
-- the two variables named inside it as blank-separated words ("$GRUB_CMDLINE_LINUX_DEFAULT
-- ..." as the drop-ins write it); anything else names its line.
local core = require("vfioinit.core")
local cmdline = require("vfioinit.edit.cmdline")
local shellvar = require("vfioinit.edit.shellvar")

local M = {}

M.VARS = { "GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT" }
local IS_VAR = { GRUB_CMDLINE_LINUX = true, GRUB_CMDLINE_LINUX_DEFAULT = true }
local UNSAFE = {}
for i, v in ipairs(M.VARS) do UNSAFE[i] = { name = v, hint = v .. '="..."' } end

local NEEDS_SHELL = "a value that needs the shell to expand"
-- A value that names itself twice doubles with each line: past these bounds (far beyond
-- any kernel's command line, 2-4 KiB) it is refused, never built.
M.MAX_BYTES, M.MAX_PIECES = 65536, 4096
local TOO_BIG = "a value larger than any kernel command line"

local function value_start(a) return a.first + #a.name + (a.append and 2 or 1) end

-- Offsets of an assignment's value text (inside its quotes when quoted), its quote, and
-- the CR that ends the line in a CRLF file ("" when none): sh keeps that CR in the value
-- (the kernel reads it as a blank), and an edit leaves it where it is.
function M.region(text, a)
  local vs, last, cr = value_start(a), a.last, ""
  if last >= vs and text:sub(last, last) == "\r" then last, cr = last - 1, "\r" end
  local q = text:sub(vs, vs)
  if (q == '"' or q == "'") and last > vs and text:sub(last, last) == q then
    return vs + 1, last - 1, q, cr
  end
  return vs, last, "", cr
end

-- True when the assignment's value is unquoted (a new blank in it needs quotes).
function M.bare(p) return p.lo == value_start(p.a) end

-- The pieces an assignment's value is made of, in order: its own literal text
-- {file=, a=, lo=, hi=, text=} (what an edit may change), the pieces of each variable of
-- VARS it names spliced in (`vars`: their pieces so far), and {text=} for what no edit
-- touches (the CR). Returns pieces, set of the variables named | nil, reason.
local function pieces_of(f, a, vars)
  local text = f.text
  local lo, hi, q, cr = M.region(text, a)
  local out, named = {}, {}
  local function literal(s, e)
    if e < s then return true end
    local t = text:sub(s, e)
    if q == "'" then
      if t:find("'", 1, true) then return nil, "mixed quoting" end
    elseif t:find("[%$`\\\"]") or (q == "" and t:find("[%s'#;&|<>()]")) then
      return nil, NEEDS_SHELL
    end
    out[#out + 1] = { file = f, a = a, lo = s, hi = e, text = t }
    return true
  end
  local pos = lo
  while q ~= "'" do
    local s = text:find("$", pos, true)
    if not s or s > hi then break end
    local name, e = text:match("^%${([%a_][%w_]*)}()", s)
    if not name then name, e = text:match("^%$([%a_][%w_]*)()", s) end
    -- a word of its own: glued to other text its words would join others'
    if not (name and IS_VAR[name] and e - 1 <= hi) or (s > lo and not text:sub(s - 1, s - 1):match("[ \t]"))
      or (e <= hi and not text:sub(e, e):match("[ \t]")) then
      return nil, NEEDS_SHELL
    end
    local ok, why = literal(pos, s - 1)
    if not ok then return nil, why end
    if #out + #vars[name] > M.MAX_PIECES then return nil, TOO_BIG end
    for _, p in ipairs(vars[name]) do out[#out + 1] = p end
    named[name] = true
    pos = e
  end
  local ok, why = literal(pos, hi)
  if not ok then return nil, why end
  if cr ~= "" then out[#out + 1] = { text = cr } end
  return out, named
end

local function joined(list)
  local t = {}
  for i, p in ipairs(list) do t[i] = p.text end
  return table.concat(t)
end

-- evaluate(files) with files = { {path=, text=}... } in sourcing order ->
-- { values = {VAR=string}, parts = {VAR={ {file=, a=, lo=, hi=, selfref=} ... }},
--   pieces = {VAR={piece...}} } (parts: the assignments of VAR its final value is made of,
-- in order; selfref: it builds on VAR's earlier value) or nil, "PATH:LINE: why".
function M.evaluate(files)
  local parts, pieces = {}, {}
  for _, var in ipairs(M.VARS) do parts[var], pieces[var] = {}, {} end
  for _, f in ipairs(files) do
    local sc, msg, line = core.scan.shell(f.text)
    if not sc then return nil, ("%s:%d: %s"):format(f.path, line or 1, msg) end
    -- export, readonly, declare, eval, source, `if` blocks: refused, by line
    local uerr = shellvar.unsafe({ f }, { sc }, UNSAFE)
    if uerr then return nil, uerr end
    for _, a in ipairs(sc) do
      if IS_VAR[a.name] then
        local list, named = pieces_of(f, a, pieces)
        if not list then
          return nil, ("%s:%d: %s is set to %s; vfioinit does not rewrite it, add the kernel "
            .. "parameters by hand"):format(f.path, a.line, a.name, named)
        end
        local selfref = a.append or named[a.name] or false
        if a.append then
          local all = {}
          for _, p in ipairs(pieces[a.name]) do all[#all + 1] = p end
          for _, p in ipairs(list) do all[#all + 1] = p end
          list = all
        end
        local size = 0
        for _, p in ipairs(#list <= M.MAX_PIECES and list or {}) do size = size + #p.text end
        if #list > M.MAX_PIECES or size > M.MAX_BYTES then
          return nil, ("%s:%d: %s is set to %s; vfioinit does not rewrite it, add the kernel parameters by hand")
            :format(f.path, a.line, a.name, TOO_BIG)
        end
        if not selfref then parts[a.name] = {} end
        local lo, hi = M.region(f.text, a)
        local own = parts[a.name]
        own[#own + 1] = { file = f, a = a, lo = lo, hi = hi, selfref = selfref }
        pieces[a.name] = list
      end
    end
  end
  local values = {}
  for _, var in ipairs(M.VARS) do values[var] = joined(pieces[var]) end
  return { values = values, parts = parts, pieces = pieces }
end

-- The effective command line GRUB's 10_linux writes for a normal entry.
function M.line(ev)
  return ev.values.GRUB_CMDLINE_LINUX .. " " .. ev.values.GRUB_CMDLINE_LINUX_DEFAULT
end

-- Where the kernel's word for parameter `name` (the last one of the effective line) is
-- written: {file=, a=, lo=, hi= (its bytes in file.text), text=}; nil when the line has no
-- such word, nil, reason when it is not written in one place of one file.
function M.word_at(ev, name)
  local w = cmdline.find(M.line(ev), name)
  if not w then return nil end
  local list = {}
  for _, p in ipairs(ev.pieces.GRUB_CMDLINE_LINUX) do list[#list + 1] = p end
  list[#list + 1] = { text = " " }
  for _, p in ipairs(ev.pieces.GRUB_CMDLINE_LINUX_DEFAULT) do list[#list + 1] = p end
  local at = 1
  for _, p in ipairs(list) do
    local e = at + #p.text - 1
    if p.file and w.first >= at and w.last <= e then
      local lo = p.lo + (w.first - at)
      return { file = p.file, a = p.a, lo = lo, hi = lo + (w.last - w.first), text = w.text }
    end
    at = e + 1
  end
  return nil, ("%s is written across two values; vfioinit cannot edit it"):format(w.text)
end

return M
