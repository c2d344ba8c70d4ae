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

-- A grub.cfg: { entries = { {title=, titles={outer..., title}, id=, line=, linux=,
-- cmdline=, initrd={paths}, linux_line=} ... } in file order (submenus flattened),
-- default = the `set default=` value (nil when unset), blscfg = true when the file runs
-- `blscfg` (the entries then come from /boot/loader/entries) }.
function M.grub(text)
  local cfg, stack, lineno = { entries = {} }, {}, 0
  local cur
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    local w = M.grub_words(line)
    local cmd = w[1]
    if cmd == "menuentry" or cmd == "submenu" then
      local id
      for k = 3, #w do if w[k] == "$menuentry_id_option" then id = w[k + 1] end end
      local titles = {}
      for _, s in ipairs(stack) do if s.title then titles[#titles + 1] = s.title end end
      titles[#titles + 1] = w[2]
      local frame = { title = w[2], kind = cmd }
      if cmd == "menuentry" then
        cur = { title = w[2], titles = titles, id = id, line = lineno, initrd = {} }
        cfg.entries[#cfg.entries + 1] = cur
        frame.entry = cur
      end
      stack[#stack + 1] = frame
    elseif cmd == "}" then
      local top = table.remove(stack)
      if top and top.entry then cur = nil end
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
