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
-- menu = { items = { {title=, id=, entry= (index in entries) | items= (a submenu)} ... } },
-- default = the last top-level `set default=` value (nil when unset), next_entry = true when
-- a `set default=` takes grubenv's `next_entry` (grub-mkconfig's 00_header does), blscfg =
-- true when the file runs `blscfg` (the entries then come from /boot/loader/entries) }.
function M.grub(text)
  local cfg, stack, lineno = { entries = {} }, {}, 0
  local top = { pos = {}, n = 0, items = {} }
  cfg.menu = top
  local cur
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    local w = M.grub_words(line)
    local cmd = w[1]
    if cmd == "menuentry" or cmd == "submenu" then
      local id
      for k = 3, #w do if w[k] == "$menuentry_id_option" or w[k] == "--id" then id = w[k + 1] end end
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
      local item = { title = w[2], id = id or w[2] }
      menu.items[#menu.items + 1] = item
      if cmd == "menuentry" then
        cur = { title = w[2], titles = titles, ids = ids, pos = pos, id = id, line = lineno, initrd = {} }
        cfg.entries[#cfg.entries + 1] = cur
        frame.entry, item.entry = cur, #cfg.entries
      else
        frame.items = {}
        item.items = frame.items
      end
      stack[#stack + 1] = frame
    elseif cmd == "}" then
      local frame = table.remove(stack)
      if frame and frame.entry then cur = nil end
    elseif cmd and line:match("{%s*$") then
      stack[#stack + 1] = { kind = "block" }           -- function f { ... }
    elseif cmd == "set" and w[2] and w[2]:match("^default=") and #stack == 0 then
      cfg.default = w[2]:match("^default=(.*)$")
      if cfg.default:match("^%$%{?next_entry%}?$") then cfg.next_entry = true end
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

-- grubenv (grub-editenv): `name=value` lines after a `#` header, padded with `#`; a
-- backslash escapes the next character. Returns {name=value}.
function M.grubenv(text)
  local env = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local k, v = line:match("^([^#=][^=]*)=(.*)$")
    if k then env[k] = v:gsub("\\(.)", "%1") end
  end
  return env
end

-- `$name` and `${name}` of a `set default=` value from grubenv (load_env): unset is "".
function M.grub_expand(value, env)
  if not value then return nil end
  return (value:gsub("%$(%b{})", function(b) return env[b:sub(2, -2)] or "" end)
    :gsub("%$([%w_]+)", function(n) return env[n] or "" end))
end

-- The text of a `default` value up to its first `>` that is not doubled (`>>` is a `>`),
-- and what follows that `>` (nil when nothing does): grub-core/normal/menu.c menuentry_eq
-- and grub_menu_execute_entry, which hands the rest to the submenu as its `default`.
local function split_default(spec)
  local head, i = {}, 1
  while i <= #spec do
    local c = spec:sub(i, i)
    if c == ">" and spec:sub(i + 1, i + 1) == ">" then head[#head + 1] = ">"; i = i + 2
    elseif c == ">" then
      local rest = spec:sub(i + 1)
      return table.concat(head), rest ~= "" and rest or nil
    else head[#head + 1] = c; i = i + 1 end
  end
  return table.concat(head), nil
end
M.split_default = split_default

-- grub_strtoul(value, 0, 0) as get_entry_number reads it: leading blanks, then 0x.. (hex),
-- 0.. (octal) or decimal digits, whatever follows ignored; nil when no digit starts it.
local function leading_number(s)
  s = s:gsub("^%s+", "")
  if s:match("^0[xX]") then
    local hex = s:match("^0[xX](%x+)")
    return hex and tonumber(hex, 16)
  end
  local oct = s:match("^0([0-7]*)")
  if oct then return oct == "" and 0 or tonumber(oct, 8) end
  local dec = s:match("^(%d+)")
  return dec and tonumber(dec)
end

-- The entry GRUB boots from `menu` when nobody presses a key, `spec` being its `default`
-- (grub-core/normal/menu.c): a leading number is the 0-based index, else the first item
-- whose title or id is the text before the first `>`; unset, unmatched or out of range is
-- item 0. A submenu runs with the rest after that `>` as its own default (none: item 0).
-- Returns the index in cfg.entries, or nil for an empty menu.
local function pick(menu, spec)
  local i
  if spec then
    local n = leading_number(spec)
    if n then i = n + 1
    else
      local head = split_default(spec)
      for k, it in ipairs(menu.items) do
        if it.title == head or it.id == head then i = k; break end
      end
    end
  end
  if not i or i < 1 or i > #menu.items then i = 1 end
  local it = menu.items[i]
  if not it then return nil end
  if it.items then return pick(it, spec and select(2, split_default(spec)) or nil) end
  return it.entry
end

-- The entries GRUB starts without a key pressed, each index in cfg.entries once: grubenv's
-- `next_entry` first when the file takes it (the next boot, once), then `set default=` with
-- grubenv's variables (`${saved_entry}`) put in. `env` is M.grubenv's table ({} without one).
function M.grub_defaults(cfg, env)
  env = env or {}
  local out, seen = {}, {}
  local function add(i) if i and not seen[i] then seen[i] = true; out[#out + 1] = i end end
  if cfg.next_entry and (env.next_entry or "") ~= "" then add(pick(cfg.menu, env.next_entry)) end
  local d = cfg.default and M.grub_expand(cfg.default, env)
  if d and cfg.next_entry and cfg.default:match("next_entry") then d = nil end
  add(pick(cfg.menu, d))
  return out
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
