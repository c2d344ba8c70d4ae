-- Command-line targets whose tool edits the boot entries itself (grubby, kernelstub): the
-- "file" vfioinit plans, writes and reverts is a record of the operations, /etc/vfioinit/
-- <tool>.cmdline: one `add WORD` or `replace OLD NEW` line per parameter. The plan's diff
-- shows it (with the command that will run as a comment), apply writes it, the regenerate
-- stage runs the tool for it, and revert, which removes the record, runs the inverse for
-- exactly those lines (`remove NEW`, `put back OLD`). A later apply appends to the record,
-- so one revert undoes every apply.
local cmdline = require("vfioinit.edit.cmdline")
local words = require("vfioinit.boot.cmdline.words")
local ownids = require("vfioinit.boot.cmdline.ownids")

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

local function key(word) return cmdline.norm(word:match("^([^=]*)")) end

-- The ids the record's operations put on the line: what the line holds now minus what the
-- first operation on vfio-pci.ids found there (ownids.lua's rule; nothing when the record
-- never touched it).
function M.added(ops, line)
  for _, o in ipairs(ops) do
    if key(o.new) == key(ownids.NAME) then
      local mine = cmdline.values(line, ownids.NAME)
      for id in pairs(cmdline.values(o.old or "", ownids.NAME)) do mine[id] = nil end
      return mine
    end
  end
  return {}
end

-- The operations that bring `line` (the entries' current options) to `wants`, or nil, why.
-- A parameter already there is replaced in its own spelling (merged value); `drop` (a set)
-- names ids an earlier apply added that this one does not, taken out of that word.
function M.ops(line, wants, drop)
  local ops = {}
  if drop and next(drop) then
    local w = cmdline.find(line, ownids.NAME)
    local new = w and cmdline.drop_values(w.text, ownids.NAME, drop)
    if w and new ~= w.text then
      for _, want in ipairs(wants) do
        if key(want.name) == key(ownids.NAME) then new = assert(cmdline.add(new, { want })) end
      end
      ops[#ops + 1] = { op = "replace", old = w.text, new = new }
      line = line:sub(1, w.first - 1) .. new .. line:sub(w.last + 1)
    end
  end
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

-- A record's operations with one per parameter, what running them all comes to: the
-- parameter's last word, replacing what the first operation found (`also`: the words of
-- it the operations in between wrote, for a tool that deletes words by their text).
function M.net(ops)
  local by, order = {}, {}
  for _, o in ipairs(ops) do
    local k = key(o.new)
    local n = by[k]
    if not n then
      n = { op = o.op, old = o.old, new = o.new, also = {} }
      by[k] = n; order[#order + 1] = n
    else
      n.also[#n.also + 1] = n.new
      n.new = o.new
    end
  end
  return order
end

-- The inverse of a record, one operation per parameter, last first: the parameter's word
-- now (the last operation's) goes back to what the first operation found (removed when
-- it added the word). Undoing each operation in turn would not do: the tools take every
-- removal before every addition, so `add X=a` then `replace X=a X=b` would end as X=a.
function M.inverse(ops)
  local first, last, order = {}, {}, {}
  for _, o in ipairs(ops) do
    local k = key(o.new)
    if not first[k] then first[k] = o; order[#order + 1] = k end
    last[k] = o
  end
  local inv = {}
  for i = #order, 1, -1 do
    local f, l = first[order[i]], last[order[i]]
    if f.op == "add" then inv[#inv + 1] = { op = "remove", old = l.new }
    else inv[#inv + 1] = { op = "replace", old = l.new, new = f.old } end
  end
  return inv
end

return M
