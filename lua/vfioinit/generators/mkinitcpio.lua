-- mkinitcpio: put the VFIO modules into the MODULES array of every config the
-- presets build with, before any GPU driver.
--
-- What upstream mkinitcpio v41 does (mkinitcpio, functions):
-- * `mkinitcpio` without -c reads /etc/mkinitcpio.conf, then every regular
--   `*.conf` in /etc/mkinitcpio.conf.d (the config path + ".d"), sorted with
--   `sort -V`, all concatenated and sourced as one file.
-- * `-c FILE` (what a preset's `ALL_config` / `<preset>_config` turns into)
--   reads FILE alone: the drop-ins are ignored (_optconfd=0).
-- * arrayize_config turns a string `MODULES="a b"` into words on spaces, and
--   parse_config strips a trailing `?` (optional module) and maps `-` to `_`.
-- * The image holds the build's config as `buildconfig` and the modules it will
--   load early as `MODULES="..."` in `config` (read by `init`, `modprobe -qab`);
--   the systemd hook also writes `etc/modules-load.d/MODULES.conf`.
-- The editing engine here is shared with dracut.lua (M.engine).
local core = require "vfioinit.core"

local M = {
  name = "mkinitcpio",
  command = "mkinitcpio",
  config = "/etc/mkinitcpio.conf",
  active_evidence = {
    "/usr/lib/kernel/install.d/50-mkinitcpio.install",
    "/usr/share/libalpm/hooks/90-mkinitcpio-install.hook",
  },
  distro_default = { "arch", "archarm", "manjaro", "manjaro-arm", "endeavouros", "artix", "garuda", "cachyos" },
  image_want = { "config", "buildconfig", "etc/modules-load.d/MODULES.conf" },
}

local CONF = "/etc/mkinitcpio.conf"
local CONF_D = "/etc/mkinitcpio.conf.d"
local PRESETS = "/etc/mkinitcpio.d"
local GPU = { "amdgpu", "radeon", "nouveau", "nvidia", "nvidia_modeset", "nvidia_uvm", "nvidia_drm", "i915", "xe" }

-- Module name as mkinitcpio compares it: `-` is `_`, a trailing `?` marks it optional.
local function norm(v) return (v:gsub("%?$", ""):gsub("-", "_")) end
M.norm = norm

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[norm(v)] = true end
  return s
end

local function default_gpu() return set_of(GPU) end

---------------------------------------------------------------------------
-- sort -V (gnulib filevercmp), used for drop-in order by both generators.
local function order(c)
  if c == "" then return 0 end
  if c:match("%d") then return 0 end
  if c:match("%a") then return c:byte() end
  if c == "~" then return -1 end
  return c:byte() + 256
end

local function verrevcmp(a, b)
  local i, j = 1, 1
  while i <= #a or j <= #b do
    local first_diff = 0
    while (i <= #a and not a:sub(i, i):match("%d")) or (j <= #b and not b:sub(j, j):match("%d")) do
      local ac, bc = order(a:sub(i, i)), order(b:sub(j, j))
      if ac ~= bc then return ac - bc end
      i, j = i + 1, j + 1
    end
    while a:sub(i, i) == "0" do i = i + 1 end
    while b:sub(j, j) == "0" do j = j + 1 end
    while a:sub(i, i):match("%d") and b:sub(j, j):match("%d") do
      if first_diff == 0 then first_diff = a:byte(i) - b:byte(j) end
      i, j = i + 1, j + 1
    end
    if a:sub(i, i):match("%d") then return 1 end
    if b:sub(j, j):match("%d") then return -1 end
    if first_diff ~= 0 then return first_diff end
  end
  return 0
end

local function strip_suffix(s)
  local prev
  repeat
    prev = s
    s = s:gsub("%.[A-Za-z~][A-Za-z0-9~]*$", "", 1)
  until s == prev or s == ""
  return s
end

-- a sorts before b under `sort -V`
function M.version_less(a, b)
  if a == b then return false end
  local r = verrevcmp(strip_suffix(a), strip_suffix(b))
  if r == 0 then r = verrevcmp(a, b) end
  if r == 0 then return a < b end
  return r < 0
end

---------------------------------------------------------------------------
-- The engine: edit the effective value of a list variable (array or
-- space-separated string) across a sequence of files, one small edit at a
-- time, rescanning after each so every offset stays true.

local engine = {}
M.engine = engine

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

local function insert_before(text, a, it, names)
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

local function insert_after(text, a, it, names)
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
    e = insert_before(files[w.fi].text, w.a, w.it, missing)
    e.fi = w.fi
  elseif #words > 0 then
    local w = words[#words]
    e = insert_after(files[w.fi].text, w.a, w.it, missing)
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

---------------------------------------------------------------------------
-- HOOKS: make sure `modconf` (which installs /etc/modprobe.d) is present.

local function hooks_edit(files, scans)
  local eff = engine.effective(scans, "HOOKS")
  local words = engine.words(eff)
  if #words == 0 then return nil, "no HOOKS" end
  local anchor_after, anchor_before
  for _, w in ipairs(words) do
    local v = w.it.value
    if v == "modconf" then return nil end
    if (v == "udev" or v == "systemd") and not anchor_after then anchor_after = w end
    if v == "block" and not anchor_before then anchor_before = w end
  end
  local e
  if anchor_after then
    e = insert_after(files[anchor_after.fi].text, anchor_after.a, anchor_after.it, { "modconf" })
    e.fi = anchor_after.fi
  elseif anchor_before then
    e = insert_before(files[anchor_before.fi].text, anchor_before.a, anchor_before.it, { "modconf" })
    e.fi = anchor_before.fi
  else
    local w = words[#words]
    e = insert_after(files[w.fi].text, w.a, w.it, { "modconf" })
    e.fi = w.fi
  end
  return e
end

-- Edit a build: the files mkinitcpio sources together, in order (files[1] gets
-- a new MODULES line when none exists). Returns true, notes or nil, err, line.
local function edit_build(files, want, gpu, opts)
  local notes = {}
  local scans0, serr0, sline0, smsg0 = engine.scan_all(files)
  if not scans0 then return nil, serr0, sline0, smsg0 end
  local vars = { { name = "MODULES", hint = "MODULES=(...)" } }
  if opts.modconf then vars[2] = { name = "HOOKS", hint = "HOOKS=(...)" } end
  local uerr, uline, umsg = engine.unsafe(files, scans0, vars)
  if uerr then return nil, uerr, uline, umsg end
  local ok, err, line, msg = engine.run(files, "MODULES", want, gpu, {
    create = function(names)
      local t = files[1].text
      local sep = (t == "" or t:sub(-1) == "\n") and "" or "\n"
      return { fi = 1, first = #t + 1, last = #t,
        insert = sep .. "MODULES=(" .. table.concat(names, " ") .. ")\n" }
    end,
  })
  if not ok then return nil, err, line, msg end
  if opts.modconf then
    local scans, serr, sline, smsg = engine.scan_all(files)
    if not scans then return nil, serr, sline, smsg end
    local e, why = hooks_edit(files, scans)
    if e then
      files[e.fi].text = engine.apply(files[e.fi].text, e)
      notes[#notes + 1] = ("%s: added the modconf hook to HOOKS so /etc/modprobe.d is in the image")
        :format(files[e.fi].path or "config")
    elseif why then
      notes[#notes + 1] = "no HOOKS array found: make sure the modconf hook runs"
    end
  end
  return true, notes
end

-- Pure: edit one config text. opts = {gpu=set, modconf=bool}.
-- Returns new text, notes | nil, msg, line.
function M.edit_text(text, want, opts)
  opts = opts or {}
  local files = { { text = text } }
  local ok, err, line, msg = edit_build(files, want, opts.gpu or default_gpu(), opts)
  if not ok then return nil, msg or err, line end
  return files[1].text, err
end

---------------------------------------------------------------------------
-- Presets.

-- The value of the last plain assignment to `name`, and its line.
local function scalar(sc, name)
  local v, line
  for _, a in ipairs(sc) do
    if a.name == name and not a.array then v, line = a.value, a.line end
  end
  return v, line
end

-- A preset's path setting (`<p>_config`, `ALL_config`, `<p>_image`) must be absolute, and
-- its `..` must not climb above `/`: mkinitcpio would resolve a relative one against its
-- working directory, which is no place in root. nil when fine, else "PATH:LINE: reason".
local function bad_preset_path(file, sc, name)
  local v, line = scalar(sc, name)
  if v == nil or v == "" then return nil end
  if v:sub(1, 1) ~= "/" then
    return ("%s:%d: %s must be an absolute path (got %q)"):format(file, line, name, v)
  end
  local depth = 0
  for part in v:gmatch("[^/]+") do
    if part == ".." then depth = depth - 1 elseif part ~= "." then depth = depth + 1 end
    if depth < 0 then
      return ("%s:%d: %s=%q leaves the root (too many ..)"):format(file, line, name, v)
    end
  end
end

local function array(sc, name)
  local v
  for _, a in ipairs(sc) do
    if a.name == name then
      v = {}
      for _, it in ipairs(a.items) do v[#v + 1] = it.value end
    end
  end
  return v
end

-- List of {name=, file=, presets={ {name=, config=, image=, kver=} } }.
local function read_presets(ctx)
  local out = {}
  local names = ctx.dir(PRESETS) or {}
  for _, n in ipairs(names) do
    if n:match("%.preset$") then
      local path = PRESETS .. "/" .. n
      local text, err = ctx.read(path)
      if err then return nil, err end
      if text then
        local sc, msg, line = core.scan.shell(text)
        if not sc then return nil, ("%s:%d: %s"):format(path, line, msg) end
        local p = { name = n:gsub("%.preset$", ""), file = path, presets = {} }
        for _, pn in ipairs(array(sc, "PRESETS") or {}) do
          for _, key in ipairs({ "ALL_config", pn .. "_config", pn .. "_image" }) do
            local bad = bad_preset_path(path, sc, key)
            if bad then return nil, bad end
          end
          p.presets[#p.presets + 1] = {
            name = pn,
            config = scalar(sc, pn .. "_config") or scalar(sc, "ALL_config"),
            image = scalar(sc, pn .. "_image"),
            kver = scalar(sc, pn .. "_kver") or scalar(sc, "ALL_kver"),
          }
        end
        out[#out + 1] = p
      end
    end
  end
  return out
end
M.read_presets = read_presets

local function dropins(ctx)
  local names = {}
  for _, n in ipairs(ctx.dir(CONF_D) or {}) do
    if n:match("%.conf$") then
      local st = ctx.stat and ctx.stat(CONF_D .. "/" .. n)
      if not st or st.type == "file" then names[#names + 1] = n end
    end
  end
  table.sort(names, M.version_less)
  return names
end

-- The builds: lists of config paths sourced together.
local function builds(ctx)
  local presets, err = read_presets(ctx)
  if not presets then return nil, err end
  local list, seen, default = {}, {}, #presets == 0
  for _, pf in ipairs(presets) do
    if #pf.presets == 0 then default = true end
    for _, p in ipairs(pf.presets) do
      if p.config and p.config ~= "" then
        if not seen[p.config] then
          seen[p.config] = true
          list[#list + 1] = { p.config }
        end
      else
        default = true
      end
    end
  end
  if default then
    local b = { CONF }
    for _, n in ipairs(dropins(ctx)) do b[#b + 1] = CONF_D .. "/" .. n end
    table.insert(list, 1, b)
  end
  return list
end
M.builds = builds

function M.edits(ctx)
  local want = ctx.modules or {}
  local gpu = ctx.gpu or default_gpu()
  local bl, err = builds(ctx)
  if not bl then return nil, err end
  local texts, before, seen_order = {}, {}, {}
  for _, b in ipairs(bl) do
    for i, path in ipairs(b) do
      if texts[path] == nil then
        local t, rerr = ctx.read(path)
        if rerr then return nil, rerr end
        if t == nil then
          if i == 1 and path ~= CONF then
            return nil, ("%s: configuration file named by a preset does not exist"):format(path)
          end
          t = false
        end
        texts[path], before[path] = t, t
        seen_order[#seen_order + 1] = path
      end
    end
  end
  if texts[CONF] == false then
    return nil, CONF .. ": does not exist (install mkinitcpio or create it)"
  end
  local notes = {}
  -- builds share files: repeat until a full pass changes nothing
  for _ = 1, 10 do
    local changed = false
    for _, b in ipairs(bl) do
      local files = {}
      for _, path in ipairs(b) do
        if texts[path] then files[#files + 1] = { path = path, text = texts[path] } end
      end
      local ok, e = edit_build(files, want, gpu, { modconf = ctx.modprobe_file ~= nil })
      if not ok then return nil, e end
      for _, n in ipairs(e) do notes[#notes + 1] = n end
      for _, f in ipairs(files) do
        if texts[f.path] ~= f.text then texts[f.path] = f.text; changed = true end
      end
    end
    if not changed then break end
  end
  local out = {}
  for _, path in ipairs(seen_order) do
    if texts[path] and texts[path] ~= before[path] then
      out[#out + 1] = { path = path, before = before[path], after = texts[path] }
    end
  end
  if ctx.warn then for _, n in ipairs(notes) do ctx.warn(n) end end
  if #notes > 0 then out.notes = notes end
  return out
end

---------------------------------------------------------------------------
-- Images and rebuilds.

local function pkgbase(ctx, kver)
  for _, d in ipairs({ "/usr/lib/modules/", "/lib/modules/" }) do
    local t = ctx.read(d .. kver .. "/pkgbase")
    if t then return (t:gsub("%s+$", "")) end
  end
end

-- The preset (file and entry) that builds kver's main image, if any.
-- (nil, nil, err when a preset file is unreadable or names a bad path)
local function preset_for(ctx, kver)
  local presets, err = read_presets(ctx)
  if not presets then return nil, nil, err end
  local base = pkgbase(ctx, kver)
  for _, pf in ipairs(presets) do
    if base and pf.name == base then return pf, pf.presets[1] end
    for _, p in ipairs(pf.presets) do
      if p.kver == kver then return pf, p end
    end
  end
end

function M.image_path(ctx, kver)
  local _, p, err = preset_for(ctx, kver)
  if err then return nil, err end
  if p and p.image and p.image ~= "" then return p.image end
  local base = pkgbase(ctx, kver)
  if base then return "/boot/initramfs-" .. base .. ".img" end
  return "/boot/initramfs-" .. kver .. ".img"
end

function M.rebuild_argv(ctx, kvers)
  local out, by = {}, {}
  for _, k in ipairs(kvers) do
    local pf, _, err = preset_for(ctx, k)
    if err then return nil, err end
    if pf then
      if not by[pf.name] then
        by[pf.name] = { argv = { "mkinitcpio", "-p", pf.name }, kernels = {} }
        out[#out + 1] = by[pf.name]
      end
      local ks = by[pf.name].kernels
      ks[#ks + 1] = k
    else
      out[#out + 1] = { argv = { "mkinitcpio", "-k", k, "-g", M.image_path(ctx, k) }, kernels = { k } }
    end
  end
  return out
end

-- Modules the image loads early: `MODULES="..."` in its `config` (what init
-- hands to modprobe), or the systemd hook's modules-load.d list.
function M.early_modules(contents)
  local set = {}
  local function get(name) return contents[name] or contents["./" .. name] or contents["/" .. name] end
  local cfg = get("config")
  if cfg then
    for line in cfg:gmatch("[^\n]+") do
      local v = line:match('^MODULES="(.*)"$') or line:match("^MODULES='(.*)'$") or line:match("^MODULES=(%S*)$")
      if v then for m in v:gmatch("%S+") do set[norm(m)] = true end end
    end
  end
  local ml = get("etc/modules-load.d/MODULES.conf")
  if ml then
    for line in ml:gmatch("[^\n]+") do
      local m = line:match("^%s*([^#%s]+)")
      if m then set[norm(m)] = true end
    end
  end
  return set
end

return M
