-- Command lines kept as plain word files, read in order and joined by a blank:
-- /etc/kernel/cmdline (kernel-install, systemd-boot, UKIs) and mkinitcpio's UKI sources
-- (/etc/kernel/cmdline or /usr/lib/kernel/cmdline, then /etc/cmdline.d/*.conf; lines that
-- start with `#` are skipped, as mkinitcpio's `grep '^[^#]'` does). A parameter already
-- written is merged in the file and line that hold its last word; new ones go into
-- `own` (created when absent, from `base`).
local cmdline = require("vfioinit.edit.cmdline")
local words = require("vfioinit.boot.cmdline.words")

local M = {}

-- The words of a file's text that count (comment lines dropped), as one line.
function M.line(text)
  local t = {}
  for l in ((text or "") .. "\n"):gmatch("([^\n]*)\n") do
    if not l:match("^#") and l:match("%S") then t[#t + 1] = l end
  end
  return table.concat(t, " ")
end

local function lines_of(text)
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  if text:sub(-1) == "\n" then lines[#lines] = nil end
  return lines
end

local function set_line(text, i, new)
  local lines = lines_of(text)
  lines[i] = new
  return table.concat(lines, "\n") .. (text:sub(-1) == "\n" and "\n" or "")
end

-- The lines that count, in reading order, as far as the kernel reads them: {path=, i=,
-- text=} up to the line with a lone `--` (what follows it is init's), and that line (nil
-- when there is none).
local function kernel_lines(order, cur)
  local out = {}
  for _, p in ipairs(order) do
    for i, l in ipairs(lines_of(cur[p] or "")) do
      if not l:match("^#") and l:match("%S") then
        local ln = { path = p, i = i, text = l }
        out[#out + 1] = ln
        if select(2, cmdline.split(l)) then return out, ln end
      end
    end
  end
  return out
end

-- text with the words appended to its last non-comment line (a new line when none), with
-- the file's line ends (a CRLF file stays CRLF).
local function append(text, add)
  local eol = text:find("\r\n", 1, true) and "\r\n" or "\n"
  local body, nl = text:match("^(.-)([\r\n]*)$")
  local last = body:match("([^\n]*)$")
  if last == "" or last:match("^#") then
    return body .. (body == "" and "" or eol) .. table.concat(add, " ") .. eol
  end
  return body:sub(1, #body - #last) .. M.insert(last, add) .. (nl ~= "" and nl or eol)
end

-- line with the words added before its `--` (what follows it is init's), else at the end
-- (before the CR of a CRLF line end, which stays the line's end).
function M.insert(line, add)
  local cr = line:match("\r$") or ""
  line = line:sub(1, #line - #cr)
  local _, init = cmdline.split(line)
  local at = init and init.first or #line + 1
  local head, tail = line:sub(1, at - 1), line:sub(at)
  local sep = (head == "" or head:match("%s$")) and "" or " "
  return head .. sep .. table.concat(add, " ") .. (init and " " or "") .. tail .. cr
end

-- plan(files, own, wants, base, drops) with files = { {path=, text=} } in reading order
-- (own among them when it exists), own = path of vfioinit's file, base = the line a new
-- own file starts from, drops = {path = set of vfio-pci.ids values to take out} (ownids.lua)
-- -> list of {path=, before=, after=} | nil, reason.
-- A parameter the kernel already reads is merged on the line that holds its last word; new
-- ones go into own, unless a `--` comes before own is read: then before that `--`.
function M.plan(files, own, wants, base, drops)
  local cur, order = {}, {}
  for _, f in ipairs(files) do cur[f.path] = f.text; order[#order + 1] = f.path end
  for p, set in pairs(drops or {}) do
    if cur[p] and next(set) then
      local lines = lines_of(cur[p])
      for i, l in ipairs(lines) do
        if not l:match("^#") then lines[i] = cmdline.drop_values(l, "vfio-pci.ids", set) end
      end
      cur[p] = table.concat(lines, "\n") .. (cur[p]:sub(-1) == "\n" and "\n" or "")
    end
  end
  local function joined()
    local t = {}
    for _, p in ipairs(order) do t[#t + 1] = M.line(cur[p]) end
    return table.concat(t, " ")
  end
  local list, why = words.to_merge(joined(), wants)
  if not list then return nil, why end
  for _, want in ipairs(list) do
    local lines = kernel_lines(order, cur)
    for k = #lines, 1, -1 do
      local l = lines[k]
      if cmdline.find(l.text, want.name) then
        cur[l.path] = set_line(cur[l.path], l.i, assert(cmdline.add(l.text, { want })))
        break
      end
    end
  end
  local add = words.missing(joined(), wants)
  if #add > 0 then
    local _, stop = kernel_lines(order, cur)
    local own_at
    for k, p in ipairs(order) do if p == own then own_at = k end end
    local stop_at
    for k, p in ipairs(order) do if stop and p == stop.path then stop_at = k end end
    if stop and (not own_at or stop_at <= own_at) then
      cur[stop.path] = set_line(cur[stop.path], stop.i, M.insert(stop.text, add))
    elseif cur[own] then cur[own] = append(cur[own], add)
    else
      cur[own] = append(base and base ~= "" and (base .. "\n") or "", add)
      order[#order + 1] = own
    end
  end
  local changes, before = {}, {}
  for _, f in ipairs(files) do before[f.path] = f.text end
  for _, p in ipairs(order) do
    if cur[p] ~= before[p] then changes[#changes + 1] = { path = p, before = before[p], after = cur[p] } end
  end
  return changes
end

return M
