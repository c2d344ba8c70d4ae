--[[ vfioinit.boot.loaders.refind: rEFInd (0.13.2, Debian's `refind`), one plugin.

Where its files are: refind.conf in rEFInd's own directory on the ESP (EFI/refind/, or
EFI/BOOT/ when it is installed as the fallback loader), and refind_linux.conf (or
refind-linux.conf) in the directory of each kernel it finds (/boot, the ESP's EFI/<dir>/).

What each entry boots, as refind/config.c, scan.c and linux.c of 0.13.2 read it:
* Lines are token lists (ReadTokenLine): blanks, `=` and `,` separate tokens outside double
  quotes, `""` in a quoted token is one `"`, `#` outside quotes ends the line, an unquoted
  `/` becomes `\`. Only the first two tokens of a refind_linux.conf line count: a title and
  the options; an unquoted `root=/dev/sda1` is three tokens, of which rEFInd passes `root`.
* refind_linux.conf: the first line with tokens is the kernel's default options; the lines
  after it are its submenu, read until the first line with fewer than two tokens. `%v`
  becomes the kernel's version string (`%%v` a literal `%v`); ` initrd=\<dir>\<initrd>` is
  appended unless the options name `initrd=` (the initrd: the file of the kernel's directory
  starting with `init` or `booster` whose version string, first digit to last, is the
  kernel's; with several, the one sharing most characters after it, then the shortest).
* refind.conf `menuentry TITLE { ... }`: `loader`, `initrd`, `options` (the last of each
  wins), `disabled`; options get ` initrd=<initrd>`. `submenuentry` blocks, `include`
  (main file only, same directory). `default_selection` (the last one without times): a
  digit is a menu position, anything else a substring of an entry's title or loader path.

Edits: the parameters go into every options field that boots one of the run's kernels (each
refind_linux.conf line rEFInd reads, each enabled stanza and submenu with its own options),
re-quoted in place; every other byte stays. No regeneration: rEFInd reads the files at boot.
]]
local cmdline = require("vfioinit.edit.cmdline")
local machine = require("vfioinit.machine")
local places = require("vfioinit.boot.places")
local ownids = require("vfioinit.boot.cmdline.ownids")
local words = require("vfioinit.boot.cmdline.words")

local M = { name = "refind", order = 70, stale_images = false, reads = { "refind" },
  title = "rEFInd refind.conf or refind_linux.conf" }

M.CONF_DIRS = { "EFI/refind", "EFI/BOOT" }
M.LINUX_CONF = { "refind_linux.conf", "refind-linux.conf" }
M.KERNEL_DIRS = { "/boot" }

local SEP = { [" "] = true, ["\t"] = true, ["="] = true, [","] = true }

--- tokens(line) -> list of {value=, first=, last= (bytes of line, quotes included), quoted=}
-- ReadTokenLine and KeepReading of config.c, character for character.
function M.tokens(line)
  local c, pos = {}, {}
  for k = 1, #line do c[k], pos[k] = line:sub(k, k), k end
  local out, p, quoted = {}, 1, false
  while true do
    while not quoted and c[p] and SEP[c[p]] do p = p + 1 end
    if c[p] == nil or c[p] == "#" then break end
    local open
    if c[p] == '"' then quoted, open, p = not quoted, p, p + 1 end
    local start = p
    while c[p] ~= nil do
      local ch = c[p]
      local more = quoted or not (SEP[ch] or ch == "#")
      if ch == '"' then
        if c[p + 1] == '"' then table.remove(c, p); table.remove(pos, p); more = true
        else quoted, more = not quoted, false end
      end
      if not more then break end
      if ch == "/" and not quoted then c[p] = "\\" end
      p = p + 1
    end
    local stop = c[p] == '"' and pos[p] or (pos[p - 1] or pos[start] or #line)
    out[#out + 1] = { value = table.concat(c, "", start, p - 1), first = pos[open or start] or #line + 1,
      last = stop, quoted = open ~= nil }
    if c[p] == nil or c[p] == "#" then break end
    p = p + 1
  end
  return out
end

-- Physical lines of text as rEFInd's ReadLine splits them (CR or LF), each with its
-- number and where it starts in text: { {text=, n=, at=} ... }; a UTF-8 BOM is skipped.
local function lines(text)
  local out, n, at = {}, 0, text:sub(1, 3) == "\239\187\191" and 4 or 1
  for l, nl in text:sub(at):gmatch("([^\n]*)(\n?)") do
    n = n + 1
    local off = 0
    for seg in (l .. "\r"):gmatch("([^\r]*)\r") do
      out[#out + 1] = { text = seg, n = n, at = at + off }
      off = off + #seg + 1
    end
    at = at + #l + #nl
    if nl == "" then break end
  end
  return out
end

-- The token the kernel's options are, as a quoted token: `"..."` with `"` doubled.
local function quote(s) return '"' .. s:gsub('"', '""') .. '"' end

-- Version string of a name (FindNumbers): from its first digit to its last, or nil.
function M.version(name)
  local a, b = name:find("%d"), select(2, name:find(".*%d"))
  return a and name:sub(a, b) or nil
end

-- `%v` as ReplaceSubstring does it: the first one becomes `ver` (`%%v` a literal `%v`).
function M.expand(s, ver)
  local i = s and s:find("%v", 1, true)
  if not i then return s end
  if i > 1 and s:sub(i - 1, i - 1) == "%" then return s:sub(1, i - 2) .. "%v" .. s:sub(i + 2) end
  return s:sub(1, i - 1) .. (ver or "") .. s:sub(i + 2)
end

--- parse_linux(text, path) -> list of {title=, options=, tok= (the options token), line=, at=,
-- default= (the first)} | nil, "path:line: reason"
function M.parse_linux(text, path)
  local out = {}
  for _, l in ipairs(lines(text)) do
    local t = M.tokens(l.text)
    if #t > 0 then
      if #out > 0 and #t < 2 then break end   -- scan.c stops the submenu here
      if #t > 2 and not t[2].quoted then
        return nil, ("%s:%d: the options are not quoted: rEFInd passes only `%s` of them (quote the options field)")
          :format(path, l.n, t[2].value)
      end
      out[#out + 1] = { title = t[1].value, options = t[2] and t[2].value, tok = t[2], line = l.n, at = l.at,
        after = t[1], default = #out == 0 or nil }
    end
  end
  return out
end

-- A stanza rEFInd leaves out: `disabled` in it or in its menuentry (a submenu's parent).
local function off(e) return e.disabled or (e.parent ~= nil and e.parent.disabled) end

-- The stanza keys whose last value wins; `disabled` is a flag.
local KEYS = { loader = true, initrd = true, options = true, volume = true }

local function stanza_line(e, t, l)
  local key = t[1].value:lower()
  if key == "disabled" then e.disabled = true
  elseif KEYS[key] and (t[2] or key == "options" or key == "initrd") then
    e[key] = t[2] and t[2].value or nil
    e.at[key] = { line = l.n, at = l.at, tok = t[2], head = t[1], text = l.text }
  elseif key == "add_options" and t[2] then e.add_options = t[2].value end
end

--- parse_conf(text, path) -> {entries = { {title=, loader=, initrd=, options=, disabled=,
-- line=, at={key={line=, at=, tok=}}, parent= (a submenu's entry)} ... }, default=, includes={}}
-- | nil, "path:line: reason"
function M.parse_conf(text, path)
  local conf, stack = { entries = {}, includes = {} }, {}
  for _, l in ipairs(lines(text)) do
    local t = M.tokens(l.text)
    local key = t[1] and t[1].value:lower() or ""
    local cur = stack[#stack]
    if key == "options" and #t > 2 and not t[2].quoted then
      return nil, ("%s:%d: the options are not quoted: rEFInd passes only `%s` of them (quote the options field)")
        :format(path, l.n, t[2].value)
    end
    if key == "}" and cur then table.remove(stack)
    elseif (key == "menuentry" and not cur) or (key == "submenuentry" and cur and not cur.parent) then
      if not t[2] then return nil, ("%s:%d: %s without a title"):format(path, l.n, key) end
      local e = { title = t[2].value, line = l.n, at = {}, parent = cur, path = path }
      if cur then for k in pairs(KEYS) do e[k] = cur[k] end end
      conf.entries[#conf.entries + 1], stack[#stack + 1] = e, e
    elseif cur and key ~= "" then stanza_line(cur, t, l)
    elseif key == "include" and #t == 2 then conf.includes[#conf.includes + 1] = t[2].value
    elseif key == "default_selection" and #t == 2 then conf.default = t[2].value
    elseif key == "default_selection" and #t == 4 then conf.timed_default = true
    elseif key == "scanfor" then conf.scanfor = t end
  end
  if #stack > 0 then
    return nil, ("%s:%d: `%s` block not closed with `}`"):format(path, stack[#stack].line,
      stack[#stack].parent and "submenuentry" or "menuentry")
  end
  return conf
end

-- Every refind.conf of root (rEFInd's own directory on each ESP): { {path=, esp=} ... }.
function M.confs(ctx)
  local out = {}
  for _, d in ipairs(places.boot_dirs(ctx, "EFI")) do
    for _, sub in ipairs(M.CONF_DIRS) do
      local p = d.dir .. "/" .. sub .. "/refind.conf"
      local st = ctx.stat(p)
      if st and st.type == "file" then out[#out + 1] = { path = p, esp = d.dir } end
    end
  end
  return out
end

-- Directories a kernel of root may be in for rEFInd: /boot, each ESP and its EFI/<dir>/.
local function kernel_dirs(ctx)
  local out, seen = {}, {}
  local function add(p)
    local st = ctx.stat(p)
    if st and st.type == "dir" and not seen[p] then seen[p] = true; out[#out + 1] = p end
  end
  for _, p in ipairs(M.KERNEL_DIRS) do add(p) end
  for _, d in ipairs(places.boot_dirs(ctx, "EFI")) do
    add(d.dir)
    for _, n in ipairs(ctx.dir(d.path) or {}) do add(d.path .. "/" .. n) end
  end
  return out
end

-- The partition a directory of root is on as rEFInd sees it: an ESP (a boot dir with EFI/)
-- when it is inside one, else / .
local function volume_of(ctx, dir)
  for _, d in ipairs(places.boot_dirs(ctx, "EFI")) do
    if dir == d.dir or dir:sub(1, #d.dir + 1) == d.dir .. "/" then return d.dir end
  end
  return "/"
end

-- A root path as rEFInd names it on its volume: `\boot\initrd.img-X`.
local function efi_path(vol, p)
  local rel = vol == "/" and p or p:sub(#vol + 1)
  return (rel:gsub("/", "\\"))
end

-- The initrd FindInitrd picks for the kernel file `name` in `dir`, or nil.
function M.find_initrd(names, kname)
  local kv, best, most = M.version(kname), nil, -1
  for _, n in ipairs(names) do
    local low = n:lower()
    if low:match("^init") or low:match("^booster") then
      local iv = M.version(n)
      if (kv and iv and iv:lower() == kv:lower()) or (not kv and not iv) then
        local shared = 0
        if kv then
          local a, b = kname:sub((kname:find(kv, 1, true) or 1)), n:sub((n:find(kv, 1, true) or 1))
          while shared < #a and a:sub(shared + 1, shared + 1) == b:sub(shared + 1, shared + 1) do shared = shared + 1 end
        end
        if shared > most or (shared == most and #n < #best) then best, most = n, shared end
      end
    end
  end
  return best
end

-- Is this file name one rEFInd takes for a Linux kernel (scan.c: bzImage, vmlinuz, kernel)?
local function is_kernel_name(n)
  local low = n:lower()
  return (low:match("^vmlinuz") or low:match("^bzimage") or low:match("^kernel")) ~= nil
end

-- The options file beside a kernel (LINUX_OPTIONS_FILENAMES order), or nil.
local function linux_conf(ctx, dir)
  for _, n in ipairs(M.LINUX_CONF) do
    local p = dir .. "/" .. n
    local st = ctx.stat(p)
    if st and st.type == "file" then return p end
  end
end

-- Every kernel file rEFInd finds in root's kernel directories: { {path=, dir=, name=,
-- names= (the directory's listing, where its initrd is looked for)} }.
local function kernel_files(ctx)
  local out = {}
  for _, dir in ipairs(kernel_dirs(ctx)) do
    local names = ctx.dir(dir) or {}
    for _, n in ipairs(names) do
      local st = is_kernel_name(n) and ctx.stat(dir .. "/" .. n)
      if st and st.type == "file" then out[#out + 1] = { path = dir .. "/" .. n, dir = dir, name = n, names = names } end
    end
  end
  return out
end

-- What root's rEFInd is configured with, read once: {confs = { {path=, esp=, conf=} },
-- default=, auto= (kernels are scanned for), files = {[path] = parsed refind_linux.conf}}
-- | nil, err.
function M.state(ctx)
  local st = { confs = {}, files = {}, auto = true }
  local function read_conf(path, esp, main)
    local text, err = ctx.read(path)
    if not text then return nil, err or (path .. ": unreadable") end
    local conf, perr = M.parse_conf(text, path)
    if not conf then return nil, perr end
    st.confs[#st.confs + 1] = { path = path, esp = esp, conf = conf, text = text }
    st.default = conf.default or st.default
    st.timed = st.timed or conf.timed_default
    if conf.scanfor then
      -- kernels are found by the scan of disks: `internal`, `external` or `optical` in scanfor
      st.auto = false
      for k = 2, #conf.scanfor do
        local v = conf.scanfor[k].value:lower()
        if v == "internal" or v == "external" or v == "optical" then st.auto = true end
      end
    end
    for _, inc in ipairs(main and conf.includes or {}) do
      local ok, ierr = read_conf(path:gsub("[^/]*$", "") .. inc:gsub("\\", "/"), esp, false)
      if not ok then return nil, ierr end
    end
    return true
  end
  for _, c in ipairs(M.confs(ctx)) do
    local ok, err = read_conf(c.path, c.esp, true)
    if not ok then return nil, err end
  end
  return st
end

-- Is `title` (or the loader path) the entry default_selection names? (nil: unknown)
local function selected(st, texts)
  if st.timed then return nil end
  local sel = st.default
  if not sel then return true end
  if sel:match("^%d$") or sel == "+" then return nil end
  for _, t in ipairs(texts) do
    if t and t:lower():find(sel:lower(), 1, true) then return true end
  end
  return false
end

local function with_initrd(opts, initrd)
  if not initrd then return opts end
  return ((opts or "") ~= "" and (opts .. " ") or "") .. "initrd=" .. initrd
end

local function chain(kver, path, initrd, cmdline_, source, entry, default, ctx)
  return { kernel = kver, kind = "image", path = path, initramfs = initrd, initrds = { initrd },
    cmdline = cmdline_, cmdline_source = source, entry = "refind: " .. entry, loader = "refind",
    default = default or nil, default_by = default and { "rEFInd" } or nil,
    exists = initrd ~= nil and ctx.stat(initrd) ~= nil }
end

-- refind_linux.conf chains of kver: one per line rEFInd reads. A kernel without one, which
-- rEFInd boots with options from /etc/fstab: an error when `strict` (its options cannot be
-- edited), else a chain whose command line is unknown, saying why (`cmdline_unknown`).
local function auto_chains(ctx, st, kver, base, out, strict)
  for _, k in ipairs(kernel_files(ctx)) do
    if places.names_kernel(k.path, kver, base) then
      local vol = volume_of(ctx, k.dir)
      local ird = M.find_initrd(k.names, k.name)
      local ird_path = ird and (k.dir .. "/" .. ird)
      local ird_efi = ird_path and efi_path(vol, ird_path)
      local conf = linux_conf(ctx, k.dir)
      if not conf and not (st.auto and #st.confs > 0) then goto next end
      if not conf then
        local why = ("%s: rEFInd derives the options of %s from /etc/fstab: create %s/refind_linux.conf "
          .. "(mkrlconf) to put parameters on its command line"):format(k.dir, k.path, k.dir)
        if strict then return nil, why end
        local c = chain(kver, k.path, ird_path, nil, k.dir, k.path .. " (options from /etc/fstab)",
          selected(st, { efi_path(vol, k.path) }), ctx)
        c.cmdline_unknown = why
        out[#out + 1] = c
        goto next
      end
      local lines_ = st.files[conf]
      if not lines_ then
        local text, rerr = ctx.read(conf)
        if not text then return nil, rerr or (conf .. ": unreadable") end
        local err
        lines_, err = M.parse_linux(text, conf)
        if not lines_ then return nil, err end
        st.files[conf] = lines_
      end
      local def = selected(st, { efi_path(vol, k.path) })
      for i, l in ipairs(lines_) do
        -- the default line's %v is the initrd's version (GetMainLinuxOptions), a submenu's the kernel's
        local opts = M.expand(l.options, M.version(i == 1 and (ird or "") or efi_path(vol, k.path)))
        if ird_efi and opts and opts:find("%v", 1, true) then opts = M.expand(opts, M.version(ird))
        elseif not (opts or ""):lower():find("initrd=", 1, true) then opts = with_initrd(opts, ird_efi) end
        out[#out + 1] = chain(kver, k.path, ird_path, opts, conf, ("%s:%d %s"):format(conf, l.line, l.title),
          i == 1 and def, ctx)
      end
    end
    ::next::
  end
  return true
end

-- A stanza's volume-relative path as a path in root: on rEFInd's own ESP, unless a
-- `volume` names another partition (then wherever the file is: /boot, /).
local function stanza_path(ctx, esp, e, p)
  p = p:gsub("\\", "/")
  if p:sub(1, 1) ~= "/" then p = "/" .. p end
  if e.volume then return places.on_partition(ctx, "/boot", p) end
  return places.on_partition(ctx, esp, p)
end

-- refind.conf stanza chains of kver (enabled entries whose loader is kver's kernel).
local function stanza_chains(ctx, st, kver, base, out)
  for _, c in ipairs(st.confs) do
    for _, e in ipairs(c.conf.entries) do
      local kpath = e.loader and stanza_path(ctx, c.esp, e, e.loader)
      if kpath and not off(e) and places.names_kernel(kpath, kver, base) then
        local opts = e.options
        if e.add_options then opts = ((opts or "") ~= "" and (opts .. " ") or "") .. e.add_options end
        local ird = e.initrd and stanza_path(ctx, c.esp, e, e.initrd)
        local title = e.parent and (e.parent.title .. " > " .. e.title) or e.title
        local def = not e.parent and selected(st, { e.title, e.loader }) or nil
        out[#out + 1] = chain(kver, kpath, ird, with_initrd(opts, e.initrd), c.path,
          ("%s:%d %s"):format(c.path, e.line, title), def, ctx)
      end
    end
  end
end

--- entries(ctx, kver [, st [, lenient]]) -> list of boot chains (lua/vfioinit/boot/chains.lua's
-- shape, loader "refind") | nil, err; `lenient`: a kernel without refind_linux.conf is a chain
-- with `cmdline_unknown`, not an error.
function M.entries(ctx, kver, st, lenient)
  local err
  if not st then st, err = M.state(ctx) end
  if not st then return nil, err end
  local out, base = {}, machine.pkgbase(ctx.read, kver)
  stanza_chains(ctx, st, kver, base, out)
  local ok, aerr = auto_chains(ctx, st, kver, base, out, not lenient)
  if not ok then return nil, aerr end
  return out
end

-- The plugin's (lua/vfioinit/boot/init.lua): the files read once per run, then per kernel.
function M.read(ctx) return M.state(ctx) end
function M.chains(st, kver) return M.entries(st.ctx, kver, st.of.refind, true) end

function M.detect(ctx)
  if #M.confs(ctx) > 0 then return true end
  for _, dir in ipairs(kernel_dirs(ctx)) do
    if linux_conf(ctx, dir) then return true end
  end
  return false
end

function M.files(ctx)
  local out = {}
  for _, c in ipairs(M.confs(ctx)) do out[#out + 1] = c.path end
  for _, dir in ipairs(kernel_dirs(ctx)) do out[#out + 1] = linux_conf(ctx, dir) end
  return out
end

function M.regenerate() return nil end

-- The new options value, or nil, reason.
local function new_options(value, wants, drop)
  local s = value or ""
  if next(drop) then s = cmdline.drop_values(s, ownids.NAME, drop) end
  return cmdline.add(s, wants)
end

-- Replacements putting the words into each options field in `fields` ({l=line record,
-- tok=, after=, insert_line=}) of one file.
local function file_edits(ctx, path, text, fields, wants)
  local function words_of(t)
    local all = {}
    for _, f in ipairs(fields) do all[#all + 1] = f.tok and f.value or nil end
    return t and table.concat(all, " ") or ""
  end
  local drop = ownids.drop(ctx, path, text, words_of, nil, wants)
  local reps = {}
  for _, f in ipairs(fields) do
    local v, why = new_options(f.value, wants, drop)
    if not v then return nil, ("%s:%d: %s"):format(path, f.line, why) end
    if f.tok and v ~= f.value then
      reps[#reps + 1] = { at = f.at + f.tok.first - 1, last = f.at + f.tok.last - 1, text = quote(v) }
    elseif not f.tok and f.newline then
      -- a stanza without `options`: a line after its `loader` line, indented as that one
      local eol = text:find("\r\n", 1, true) and "\r\n" or "\n"
      local lf = text:find("\n", f.at, true)
      local at = lf and lf + 1 or #text + 1
      reps[#reps + 1] = { at = at, last = at - 1, text = (lf and "" or eol)
        .. f.newline.text:match("^%s*") .. "options " .. quote(v) .. eol }
    elseif not f.tok then
      local at = f.at + f.after.last
      reps[#reps + 1] = { at = at, last = at - 1, text = " " .. quote(v) }
    end
  end
  local after = words.splice(text, reps)
  if after == text then return {} end
  return { { path = path, before = text, after = after } }
end

-- The options fields of root's rEFInd files that boot one of `ks`, per file: {[path] = {...}}.
local function fields_by_file(ctx, st, ks)
  local by, order = {}, {}
  local function add(path, f)
    if not by[path] then by[path] = {}; order[#order + 1] = path end
    by[path][#by[path] + 1] = f
  end
  for _, k in ipairs(ks) do
    local base = machine.pkgbase(ctx.read, k)
    for _, c in ipairs(st.confs) do
      for _, e in ipairs(c.conf.entries) do
        local kpath = e.loader and stanza_path(ctx, c.esp, e, e.loader)
        local own = e.at.options or (not e.parent and e.at.loader)
        if kpath and own and not off(e) and places.names_kernel(kpath, k, base) and not own.seen then
          own.seen = true
          local o = e.at.options
          add(c.path, { value = e.options, tok = o and o.tok, at = own.at, line = own.line,
            newline = not o and own or nil, after = o and o.head })
        end
      end
    end
    local _, err = auto_chains(ctx, st, k, base, {}, true)
    if err then return nil, err end
  end
  for path, list in pairs(st.files) do
    for _, l in ipairs(list) do
      add(path, { value = l.options, tok = l.tok, at = l.at, line = l.line, after = l.after })
    end
  end
  return by, order
end

--- edits(ctx, wants) -> list of {path=, before=, after=} | nil, "path:line: reason"
function M.edits(ctx, wants)
  local st, err = M.state(ctx)
  if not st then return nil, err end
  local by, order = fields_by_file(ctx, st, words.kernels(ctx))
  if not by then return nil, order end
  table.sort(order)
  local out = {}
  for _, path in ipairs(order) do
    local text = ctx.read(path)
    local list, ferr = file_edits(ctx, path, text, by[path], wants)
    if not list then return nil, ferr end
    for _, c in ipairs(list) do out[#out + 1] = c end
  end
  return out
end

return M
