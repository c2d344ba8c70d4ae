-- Command-line targets whose tool edits the boot entries itself (grubby, kernelstub): the
-- "file" vfioinit plans, writes and reverts is a record of the operations, /etc/vfioinit/
-- <tool>.cmdline: one `add WORD` or `replace OLD NEW` line per parameter. The plan's diff
-- shows it (with the command that will run as a comment), apply writes it, the regenerate
-- stage runs the tool for it, and revert, which removes the record, runs the inverse for
-- exactly those lines (`remove NEW`, `put back OLD`). A later apply appends to the record,
-- so one revert undoes every apply.
local cmdline = require "vfioinit.cmdline"
local words = require "vfioinit.bootloaders.words"

local M = {}

M.DIR = "/etc/vfioinit"

function M.path(tool) return M.DIR .. "/" .. tool .. ".cmdline" end

-- Records: text -> list of {op="add"|"replace", old=, new=}.
function M.parse(text)
  local ops = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local a = line:match("^add (%S+)$")
    local o, n = line:match("^replace (%S+) (%S+)$")
    if a then ops[#ops + 1] = { op = "add", new = a }
    elseif o then ops[#ops + 1] = { op = "replace", old = o, new = n } end
  end
  return ops
end

-- The operations that bring `line` (the entries' current options) to `wants`, or nil, why.
-- A parameter already there is replaced in its own spelling (merged value).
function M.ops(line, wants)
  local ops = {}
  local list, why = words.to_merge(line, wants)
  if not list then return nil, why end
  for _, want in ipairs(list) do
    local w = cmdline.find(line, want.name)
    local new = cmdline.add(w.text, { want })
    ops[#ops + 1] = { op = "replace", old = w.text, new = new }
  end
  for _, a in ipairs(words.missing(line, wants)) do ops[#ops + 1] = { op = "add", new = a } end
  return ops
end

-- The record's new text: the old one plus `ops`, with the commands as comments.
function M.record(tool, old, ops, describe)
  if #ops == 0 then return old end
  local lines = {}
  if not old then
    lines[1] = ("# vfioinit --cmdline: kernel parameters given to %s (`vfioinit revert` undoes exactly these)"):format(tool)
  end
  for _, argv in ipairs(describe(ops)) do lines[#lines + 1] = "# runs: " .. table.concat(argv, " ") end
  for _, o in ipairs(ops) do
    lines[#lines + 1] = o.op == "add" and ("add " .. o.new) or ("replace " .. o.old .. " " .. o.new)
  end
  return (old or "") .. table.concat(lines, "\n") .. "\n"
end

-- The inverse operations of a record, last first.
function M.inverse(ops)
  local inv = {}
  for i = #ops, 1, -1 do
    local o = ops[i]
    if o.op == "add" then inv[#inv + 1] = { op = "remove", old = o.new }
    else inv[#inv + 1] = { op = "replace", old = o.new, new = o.old } end
  end
  return inv
end

return M
