--- vfioinit.edit.shellvar: edit the effective value of a shell list variable (a bash array
-- or a space-separated string) across the sequence of files a tool sources together,
-- one small edit at a time, rescanning after each so every offset stays true.
-- Used by mkinitcpio (MODULES, HOOKS) and dracut (force_drivers); each keeps only its
-- own policy (which files, which variable, how a new assignment looks).
--
-- Edits are {fi=file index, first=, last=, insert=}: replace files[fi].text[first..last].
local core = require("vfioinit.core")
local util = require("vfioinit.util")

local engine = {}

-- A word's module name: `-` is `_`, a trailing `?` (mkinitcpio: optional module) dropped.
local function norm(v) return (v:gsub("%?$", ""):gsub("-", "_")) end
engine.norm = norm

function engine.set_of(list) return util.set(list, norm) end
local set_of = engine.set_of


local function line_bounds(text, pos)
  local ls = pos
  while ls > 1 and text:sub(ls - 1, ls - 1) ~= "\n" do ls = ls - 1 end
  local le = text:find("\n", pos, true) or (#text + 1)
  return ls, le
end

-- Offset of the first byte of an assignment's value.
local function value_start(a)
  return a.first + #a.name + (a.append and 2 or 1)
end

-- The assignments that make up `var`'s final value: the last plain `=` and the `+=` after it.
function engine.effective(scans, var)
  local eff = {}
  for fi, sc in ipairs(scans) do
    for _, a in ipairs(sc) do
      if a.name == var then
        if not a.append then eff = {} end
        eff[#eff + 1] = { fi = fi, a = a }
      end
    end
  end
  return eff
end

function engine.words(eff)
  local w = {}
  for _, e in ipairs(eff) do
    for _, it in ipairs(e.a.items) do
      w[#w + 1] = { fi = e.fi, a = e.a, it = it, name = norm(it.value) }
    end
  end
  return w
end

-- Region of a scalar's words: inside its quotes, or the bare word.
local function scalar_region(text, a)
  local vs = value_start(a)
  local q = text:sub(vs, vs)
  if a.quote ~= "" and (q == '"' or q == "'") and text:sub(a.last, a.last) == q then
    return vs + 1, a.last - 1
  end
  return vs, a.last
end

-- An edit that removes one word with the blanks that go with it.
local function delete_edit(text, a, it)
  local lo, hi
  if a.array then
    lo, hi = line_bounds(text, it.first)
    hi = hi - 1
  else
    lo, hi = scalar_region(text, a)
    local ls, le = line_bounds(text, it.first)
    lo, hi = math.max(lo, ls), math.min(hi, le - 1)
  end
  local before = text:sub(lo, it.first - 1)
  local after = text:sub(it.last + 1, hi)
  if a.array and before:match("^[ \t]*$") and after:match("^[ \t]*$") and hi < #text then
    return { first = lo, last = hi + 1, insert = "" } -- the whole line
  end
  local trail = after:match("^[ \t]+") or ""
  local rest = after:sub(#trail + 1)
  if #trail > 0 and rest ~= "" and not rest:match("^[#)]") then
    return { first = it.first, last = it.last + #trail, insert = "" }
  end
  local lead = before:match("[ \t]+$") or ""
  if #lead > 0 and #lead < #before then
    return { first = it.first - #lead, last = it.last, insert = "" }
  end
  return { first = it.first, last = it.last + #trail, insert = "" }
end

local function is_multiline_item(text, a, it)
  local ls = line_bounds(text, it.first)
  return a.array and it.line > a.line and text:sub(ls, it.first - 1):match("^[ \t]*$") ~= nil, text:sub(ls, it.first - 1)
end

-- An unquoted scalar (MODULES=ext4) gets quotes when it grows to several words.
local function rewrap_edit(_, a, words)
  local vs = value_start(a)
  return { first = vs, last = a.last, insert = '"' .. table.concat(words, " ") .. '"' }
end

function engine.insert_before(text, a, it, names)
  if not a.array and a.quote == "" then
    local words = {}
    for _, n in ipairs(names) do words[#words + 1] = n end
    words[#words + 1] = text:sub(value_start(a), a.last)
    return rewrap_edit(text, a, words)
  end
  local multi, prefix = is_multiline_item(text, a, it)
  if multi then
    return { first = it.first, last = it.first - 1,
      insert = table.concat(names, "\n" .. prefix) .. "\n" .. prefix }
  end
  return { first = it.first, last = it.first - 1, insert = table.concat(names, " ") .. " " }
end

function engine.insert_after(text, a, it, names)
  if not a.array and a.quote == "" then
    local words = { text:sub(value_start(a), a.last) }
    for _, n in ipairs(names) do words[#words + 1] = n end
    return rewrap_edit(text, a, words)
  end
  local multi, prefix = is_multiline_item(text, a, it)
  if multi and a.close and select(1, line_bounds(text, a.close)) > it.last then
    return { first = it.last + 1, last = it.last, insert = "\n" .. prefix .. table.concat(names, "\n" .. prefix) }
  end
  return { first = it.last + 1, last = it.last, insert = " " .. table.concat(names, " ") }
end

-- Into an assignment without words: MODULES=() / MODULES="" / MODULES=
local function insert_empty(text, a, names, pad)
  local s = table.concat(names, " ")
  if a.array then
    return { first = a.open + 1, last = a.open, insert = s }
  end
  local lo, hi = scalar_region(text, a)
  if lo == value_start(a) then -- unquoted, empty
    return { first = lo, last = a.last, insert = '"' .. pad .. s .. pad .. '"' }
  end
  local inner = text:sub(lo, hi)
  if pad ~= "" and inner:match("^[ \t]+$") then
    return { first = lo + 1, last = lo, insert = s .. " " }
  end
  return { first = lo, last = lo - 1, insert = pad .. s .. pad }
end

--[[
One step for variable `var` over `files` ({text=...}, scans parallel).
Returns an edit {fi=, first=, last=, insert=} (replace text[first..last]),
or nil when the effective value already has every `want` name exactly once,
all before the first `gpu` name.
opts.create(names) -> edit when no assignment exists at all.
]]
function engine.step(files, scans, var, want, gpu, opts)
  local eff = engine.effective(scans, var)
  local words = engine.words(eff)
  local wantset = set_of(want)
  local gpu_i
  for i, w in ipairs(words) do
    if gpu[w.name] then gpu_i = i; break end
  end
  local seen = {}
  for i, w in ipairs(words) do
    if wantset[w.name] then
      if seen[w.name] or (gpu_i and i > gpu_i) then
        local e = delete_edit(files[w.fi].text, w.a, w.it)
        e.fi = w.fi
        e.why = ("remove %s at line %d"):format(w.it.value, w.it.line)
        return e
      end
      seen[w.name] = true
    end
  end
  local missing = {}
  for _, m in ipairs(want) do
    local n = norm(m)
    if not seen[n] then seen[n] = true; missing[#missing + 1] = n end
  end
  if #missing == 0 then return nil end
  local e
  if gpu_i then
    local w = words[gpu_i]
    e = engine.insert_before(files[w.fi].text, w.a, w.it, missing)
    e.fi = w.fi
  elseif #words > 0 then
    local w = words[#words]
    e = engine.insert_after(files[w.fi].text, w.a, w.it, missing)
    e.fi = w.fi
  elseif #eff > 0 then
    local last = eff[#eff]
    e = insert_empty(files[last.fi].text, last.a, missing, opts.pad or "")
    e.fi = last.fi
  else
    e = opts.create(missing)
  end
  return e
end

-- An edit appending `line` ("NAME=...") to files[1] as a line of its own: what a
-- step's opts.create returns when the variable has no assignment at all.
function engine.append_line(files, line)
  local t = files[1].text
  local sep = (t == "" or t:sub(-1) == "\n") and "" or "\n"
  return { fi = 1, first = #t + 1, last = #t, insert = sep .. line .. "\n" }
end

function engine.apply(text, e)
  return text:sub(1, e.first - 1) .. e.insert .. text:sub(e.last + 1)
end

-- Scan every file; nil, "path:line: msg" on a syntax error.
function engine.scan_all(files)
  local scans = {}
  for i, f in ipairs(files) do
    local sc, msg, line = core.scan.shell(f.text)
    if not sc then
      return nil, ("%s:%d: %s"):format(f.path or "", line or 0, msg), line, msg, i
    end
    scans[i] = sc
  end
  return scans
end

-- Commands that declare or change a variable named in their arguments.
local DECLARE = { declare = true, typeset = true, ["local"] = true, readonly = true, export = true }

-- Does a command word name `var` (VAR, VAR=..., VAR+=..., VAR[...])?
local function names_var(word, var)
  if word == var then return true end
  local rest = word:sub(#var + 1)
  return word:sub(1, #var) == var and (rest:match("^%+?=") or rest:match("^%[")) ~= nil
end

-- The first reason (by line) why `var` may be set other than by a plain
-- top-level assignment in one scanned file: line, reason.
local function unsafe_in(sc, var)
  local best, why
  local function note(line, w)
    if not best or line < best then best, why = line, w end
  end
  for _, a in ipairs(sc.nested or {}) do
    if a.name == var then note(a.line, ("%s is set %s"):format(var, a.why)) end
  end
  for _, c in ipairs(sc.commands or {}) do
    local name, args = c.name, c.args
    if (name == "builtin" or name == "command") and args[1] then
      local rest = {}
      for k = 2, #args do rest[#rest + 1] = args[k] end
      name, args = args[1], rest
    end
    if name == "source" or name == "." or name == "eval" then
      local what = name == "eval" and "eval" or (name .. " " .. (args[1] or ""))
      note(c.line, ("`%s` may set %s and vfioinit cannot see what it does"):format(what, var))
    elseif names_var(name, var) then
      note(c.line, ("%s is set element by element (%s)"):format(var, name))
    else
      for _, w in ipairs(args) do
        if names_var(w, var) then
          local how = not DECLARE[name] and "passed to" or w == var and "declared by" or "set by"
          note(c.line, ("%s is %s %s"):format(var, how, name))
          break
        end
      end
    end
  end
  return best, why
end

--[[
Refuse a variable vfioinit cannot edit safely: one set inside an if/case/loop,
a function, a { } group or ( ) subshell, after && || or in a pipeline, by
declare/typeset/local/readonly/export, element-wise, or a file that runs
source/./eval (what they set is unknown). Editing the plain assignment beside
such a statement (or appending a new one) could drop the user's modules from
what bash ends up with, so nothing is edited. `vars` = { {name=, hint=} }.
Returns nil or err ("path:line: msg"), line, msg.
]]
function engine.unsafe(files, scans, vars)
  for i, sc in ipairs(scans) do
    for _, v in ipairs(vars) do
      local line, why = unsafe_in(sc, v.name)
      if line then
        local msg = ("%s; vfioinit edits only plain top-level assignments: move it to a plain line %s and run again")
          :format(why, v.hint)
        return ("%s:%d: %s"):format(files[i].path or "", line, msg), line, msg
      end
    end
  end
end

-- Run steps until nothing is left to do. Edits files[i].text in place.
function engine.run(files, var, want, gpu, opts)
  for _ = 1, 200 do
    local scans, err, line, msg = engine.scan_all(files)
    if not scans then return nil, err, line, msg end
    local e = engine.step(files, scans, var, want, gpu, opts)
    if not e then return true end
    files[e.fi].text = engine.apply(files[e.fi].text, e)
  end
  return nil, "too many edits (the file keeps changing)", 0, "too many edits"
end

return engine
