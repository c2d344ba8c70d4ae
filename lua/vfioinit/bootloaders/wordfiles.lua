-- Command lines kept as plain word files, read in order and joined by a blank:
-- /etc/kernel/cmdline (kernel-install, systemd-boot, UKIs) and mkinitcpio's UKI sources
-- (/etc/kernel/cmdline or /usr/lib/kernel/cmdline, then /etc/cmdline.d/*.conf; lines that
-- start with `#` are skipped, as mkinitcpio's `grep '^[^#]'` does). A parameter already
-- written is merged in the file and line that hold its last word; new ones go into
-- `own` (created when absent, from `base`).
local cmdline = require "vfioinit.cmdline"
local words = require "vfioinit.bootloaders.words"

local M = {}

-- The words of a file's text that count (comment lines dropped), as one line.
function M.line(text)
  local t = {}
  for l in ((text or "") .. "\n"):gmatch("([^\n]*)\n") do
    if not l:match("^#") and l:match("%S") then t[#t + 1] = l end
  end
  return table.concat(t, " ")
end

-- text with `want` merged on the last line that names it; nil when no line does.
local function merge_in(text, want)
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  if text:sub(-1) == "\n" then lines[#lines] = nil end
  for i = #lines, 1, -1 do
    if not lines[i]:match("^#") and cmdline.find(lines[i], want.name) then
      lines[i] = assert(cmdline.add(lines[i], { want }))
      return table.concat(lines, "\n") .. (text:sub(-1) == "\n" and "\n" or "")
    end
  end
end

-- text with the words appended to its last non-comment line (a new line when none).
local function append(text, add)
  local body, nl = text:match("^(.-)(\n*)$")
  local last = body:match("([^\n]*)$")
  if last == "" or last:match("^#") then
    return body .. (body == "" and "" or "\n") .. table.concat(add, " ") .. "\n"
  end
  -- before a `--` (what follows it is init's), else at the end
  local _, init = cmdline.split(last)
  local at = init and init.first or #last + 1
  local head, tail = last:sub(1, at - 1), last:sub(at)
  local sep = (head == "" or head:match("%s$")) and "" or " "
  local new = head .. sep .. table.concat(add, " ") .. (init and " " or "") .. tail
  return body:sub(1, #body - #last) .. new .. (nl ~= "" and nl or "\n")
end

-- plan(files, own, wants, base) with files = { {path=, text=} } in reading order (own
-- among them when it exists), own = path of vfioinit's file, base = the line a new own
-- file starts from -> list of {path=, before=, after=} | nil, reason.
function M.plan(files, own, wants, base)
  local cur, order = {}, {}
  for _, f in ipairs(files) do cur[f.path] = f.text; order[#order + 1] = f.path end
  local function joined()
    local t = {}
    for _, p in ipairs(order) do t[#t + 1] = M.line(cur[p]) end
    return table.concat(t, " ")
  end
  local list, why = words.to_merge(joined(), wants)
  if not list then return nil, why end
  for _, want in ipairs(list) do
    for i = #order, 1, -1 do
      local new = merge_in(cur[order[i]], want)
      if new then cur[order[i]] = new; break end
    end
  end
  local add = words.missing(joined(), wants)
  if #add > 0 then
    if cur[own] then cur[own] = append(cur[own], add)
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

-- The effective line of the files, for read-back and status.
function M.joined(files)
  local t = {}
  for _, f in ipairs(files) do t[#t + 1] = M.line(f.text) end
  return table.concat(t, " ")
end

return M
