-- GRUB's command-line variables as grub-mkconfig sees them: /etc/default/grub, then
-- /etc/default/grub.d/*.cfg in glob order (Debian, Ubuntu), each sourced by /bin/sh.
-- `evaluate` gives each variable's value and the assignments it is made of; `edit_value`
-- rewrites one word list inside one assignment. Only what can be known without running
-- the shell is accepted: a quoted or plain literal, and the self-reference
-- "$GRUB_CMDLINE_LINUX_DEFAULT ..." the drop-ins use; anything else names its line.
local core = require "vfioinit.core"
local cmdline = require "vfioinit.cmdline"

local M = {}

M.VARS = { "GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT" }
local IS_VAR = { GRUB_CMDLINE_LINUX = true, GRUB_CMDLINE_LINUX_DEFAULT = true }

-- Offsets of an assignment's value text (inside its quotes when quoted).
local function region(text, a)
  local vs = a.first + #a.name + (a.append and 2 or 1)
  local q = text:sub(vs, vs)
  if (q == '"' or q == "'") and a.last > vs and text:sub(a.last, a.last) == q then
    return vs + 1, a.last - 1, q
  end
  return vs, a.last, ""
end

-- The literal value of an assignment, with `$VAR`/`${VAR}` of the two GRUB variables
-- replaced from `values`; nil, reason when it needs the shell (other expansions, escapes,
-- mixed quoting).
local function literal(text, a, values)
  local lo, hi, q = region(text, a)
  local raw = text:sub(lo, hi)
  if q == "'" then
    if raw:find("'", 1, true) then return nil, "mixed quoting" end
    return raw, lo, hi, false
  end
  local selfref = false
  local v = raw:gsub("%${?([%w_]+)}?", function(name)
    if IS_VAR[name] then selfref = true; return values[name] or "" end
  end)
  if v:find("[%$`\\\"]") or (q == "" and v:find("[%s'#;&|<>()]")) then
    return nil, "a value that needs the shell to expand"
  end
  return v, lo, hi, selfref
end

-- evaluate(files) with files = { {path=, text=}... } in sourcing order ->
-- { values = {VAR=string}, parts = {VAR={ {file=, a=, lo=, hi=, raw=} ... }} }
-- (parts: the assignments the final value is made of, in order) or nil, "PATH:LINE: why".
function M.evaluate(files)
  local values, parts = { GRUB_CMDLINE_LINUX = "", GRUB_CMDLINE_LINUX_DEFAULT = "" }, {}
  for _, var in ipairs(M.VARS) do parts[var] = {} end
  for _, f in ipairs(files) do
    local sc, msg, line = core.scan.shell(f.text)
    if not sc then return nil, ("%s:%d: %s"):format(f.path, line or 1, msg) end
    for _, a in ipairs(sc.nested or {}) do
      if IS_VAR[a.name] then
        return nil, ("%s:%d: %s is set %s; vfioinit cannot tell its value, add the kernel "
          .. "parameters by hand"):format(f.path, a.line, a.name, a.why)
      end
    end
    for _, a in ipairs(sc) do
      if IS_VAR[a.name] then
        local v, lo, hi, selfref = literal(f.text, a, values)
        if not v then
          return nil, ("%s:%d: %s is set to %s; vfioinit does not rewrite it, add the kernel "
            .. "parameters by hand"):format(f.path, a.line, a.name, lo)
        end
        if a.append then v, selfref = values[a.name] .. v, true end
        if not selfref then parts[a.name] = {} end
        local list = parts[a.name]
        list[#list + 1] = { file = f, a = a, lo = lo, hi = hi, selfref = selfref }
        values[a.name] = v
      end
    end
  end
  return { values = values, parts = parts }
end

-- The effective command line GRUB's 10_linux writes for a normal entry.
function M.line(ev)
  return ev.values.GRUB_CMDLINE_LINUX .. " " .. ev.values.GRUB_CMDLINE_LINUX_DEFAULT
end

-- The assignment whose literal text holds the last `name` word of `var`, or nil.
function M.holder(ev, var, name)
  local list = ev.parts[var]
  for i = #list, 1, -1 do
    local p = list[i]
    if cmdline.find(p.file.text:sub(p.lo, p.hi), name) then return p end
  end
end

-- New text of p.file with `wants` merged into the words of assignment p (a word the
-- user wrote stays in place). Returns text or nil, reason.
function M.edit_value(p, wants)
  local text = p.file.text
  local raw = text:sub(p.lo, p.hi)
  local new, why = cmdline.add(raw, wants)
  if not new then return nil, why end
  local vs = p.a.first + #p.a.name + (p.a.append and 2 or 1)
  if p.lo == vs and new:find(" ", 1, true) then
    -- a plain word (X=quiet) that grows to several words needs quotes
    return text:sub(1, p.lo - 1) .. '"' .. new .. '"' .. text:sub(p.hi + 1)
  end
  return text:sub(1, p.lo - 1) .. new .. text:sub(p.hi + 1)
end

return M
