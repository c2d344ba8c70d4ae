-- Readers of the files a bootloader boots from: GRUB's generated grub.cfg and Boot Loader
-- Specification entries (/boot/loader/entries/*.conf). Pure text in, tables out, no I/O:
-- the boot chain and the command-line verifier both read through these, so "what GRUB
-- loads" is decided in one place.
local unpack = require("vfioinit.util").unpack

local M = {}

-- GRUB script words of one line (grub-core/script/yylex.l, simplified to what grub-mkconfig
-- writes): blanks separate, '...' is literal, "..." and a backslash escape; `#` at a word's
-- start begins a comment. Returns the list of words (quotes removed).
function M.grub_words(line)
  local words, cur, i, n, inword = {}, {}, 1, #line, false
  local function flush()
    if inword then words[#words + 1] = table.concat(cur) end
    cur, inword = {}, false
  end
  while i <= n do
    local c = line:sub(i, i)
    if c == "'" then
      local j = line:find("'", i + 1, true) or n + 1
      cur[#cur + 1], inword, i = line:sub(i + 1, j - 1), true, j + 1
    elseif c == '"' then
      i = i + 1
      while i <= n and line:sub(i, i) ~= '"' do
        if line:sub(i, i) == "\\" and i < n then i = i + 1 end
        cur[#cur + 1] = line:sub(i, i); i = i + 1
      end
      inword, i = true, i + 1
    elseif c == "\\" and i < n then
      cur[#cur + 1], inword, i = line:sub(i + 1, i + 1), true, i + 2
    elseif c:match("[ \t]") then
      flush(); i = i + 1
    elseif c == "#" and not inword then
      break
    else
      cur[#cur + 1], inword, i = c, true, i + 1
    end
  end
  flush()
  return words
end

-- The command line GRUB hands the kernel for `linux PATH ARGS...`: the words joined by one
-- blank, a word with a blank in it double-quoted (grub_create_loader_cmdline does that).
local function loader_cmdline(args)
  local t = {}
  for k, w in ipairs(args) do t[k] = w:find("[ \t]") and ('"' .. w .. '"') or w end
  return table.concat(t, " ")
end

local LINUX = { linux = true, linux16 = true, linuxefi = true }
local INITRD = { initrd = true, initrd16 = true, initrdefi = true }

-- A grub.cfg: { entries = { {title=, titles={outer..., title}, id=, ids={outer id or
-- title..., own}, pos={0-based index per menu level}, line=, linux=, cmdline=,
-- initrd={paths}, linux_line=} ... } in file order (submenus flattened),
-- default = the `set default=` value (nil when unset), blscfg = true when the file runs
-- `blscfg` (the entries then come from /boot/loader/entries) }.
function M.grub(text)
  local cfg, stack, lineno = { entries = {} }, {}, 0
  local top = { pos = {}, n = 0 }
  local cur
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    local w = M.grub_words(line)
    local cmd = w[1]
    if cmd == "menuentry" or cmd == "submenu" then
      local id
      for k = 3, #w do if w[k] == "$menuentry_id_option" then id = w[k + 1] end end
      local titles, ids, menu = {}, {}, top
      for _, s in ipairs(stack) do
        if s.title then titles[#titles + 1] = s.title; ids[#ids + 1] = s.id or s.title end
        if s.kind == "submenu" then menu = s end
      end
      titles[#titles + 1] = w[2]
      ids[#ids + 1] = id or w[2]
      -- its place in the menu as `set default=` counts: 0-based, one index per submenu level
      local pos = { unpack(menu.pos) }
      pos[#pos + 1] = menu.n
      menu.n = menu.n + 1
      local frame = { title = w[2], id = id, kind = cmd, pos = pos, n = 0 }
      if cmd == "menuentry" then
        cur = { title = w[2], titles = titles, ids = ids, pos = pos, id = id, line = lineno, initrd = {} }
        cfg.entries[#cfg.entries + 1] = cur
        frame.entry = cur
      end
      stack[#stack + 1] = frame
    elseif cmd == "}" then
      local frame = table.remove(stack)
      if frame and frame.entry then cur = nil end
    elseif cmd and line:match("{%s*$") then
      stack[#stack + 1] = { kind = "block" }           -- function f { ... }
    elseif cmd == "set" and w[2] and w[2]:match("^default=") and #stack == 0 then
      cfg.default = w[2]:match("^default=(.*)$")
    elseif cmd == "blscfg" then
      cfg.blscfg = true
    elseif cur and LINUX[cmd] then
      cur.linux, cur.linux_line = w[2], lineno
      cur.cmdline = loader_cmdline({ unpack(w, 3) })
    elseif cur and INITRD[cmd] then
      for k = 2, #w do cur.initrd[#cur.initrd + 1] = w[k] end
    end
  end
  return cfg
end

-- Does one `>`-separated part of `set default=` name the item at this level? GRUB
-- (grub-core/normal/menu.c) takes a number as the 0-based index, else an id or a title.
local function part_matches(part, e, level)
  if part:match("^%d+$") then return tonumber(part) == e.pos[level] end
  return part == e.ids[level] or part == e.titles[level]
end

-- The entry `set default=` selects: its index in cfg.entries, or nil when the default is
-- unset, a variable (`${saved_entry}`: kept in grubenv, not in grub.cfg), or names no
-- entry (a submenu itself, an index past the end). GRUB falls back to entry 0 when unset.
function M.grub_default(cfg)
  local d = cfg.default or "0"
  if d:find("$", 1, true) then return nil end
  local parts = {}
  for p in (d .. ">"):gmatch("([^>]*)>") do parts[#parts + 1] = p end
  for i, e in ipairs(cfg.entries) do
    local ok = #e.pos == #parts
    for level = 1, #parts do ok = ok and part_matches(parts[level], e, level) end
    if ok then return i end
  end
  return nil
end

-- One BLS type #1 entry (uapi-group.org/specifications/specs/boot_loader_specification):
-- `key value` lines, `#` comments; `initrd` and `options` may repeat (options are joined by
-- a blank, as the loaders do). Returns {title=, version=, linux=, efi=, initrd={...},
-- options=, lines={key=first line}} or nil, msg, line for a line that is not `key value`.
function M.bls(text)
  local e, lineno = { initrd = {}, lines = {} }, 0
  local opts = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    if not line:match("^%s*#") and line:match("%S") then
      local key, value = line:match("^%s*([%w_-]+)%s+(.-)%s*$")
      if not key then
        key = line:match("^%s*([%w_-]+)%s*$")
        if not key then return nil, "not a `key value` line", lineno end
        value = ""
      end
      e.lines[key] = e.lines[key] or lineno
      if key == "initrd" then e.initrd[#e.initrd + 1] = value
      elseif key == "options" then opts[#opts + 1] = value
      elseif key ~= "lines" then e[key] = value end
    end
  end
  e.options = #opts > 0 and table.concat(opts, " ") or nil
  return e
end

return M
