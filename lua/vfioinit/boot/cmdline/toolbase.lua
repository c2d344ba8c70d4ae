-- The shared body of grubby.lua and kernelstub.lua: a target whose tool edits the boot
-- entries itself (lua/vfioinit/boot/cmdline/cmdtool.lua keeps the record). `spec` gives
-- {name=, order=, covers=, command=, apply(ops) -> list of argv, undo(inverse ops) -> list of
-- argv}; what the tool edits is read back from the BLS entries and UKIs.
local machine = require("vfioinit.machine")
local bootcfg = require("vfioinit.boot.cfg")
local cmdtool = require("vfioinit.boot.cmdline.cmdtool")
local places = require("vfioinit.boot.places")
local ownids = require("vfioinit.boot.cmdline.ownids")
local cmdline = require("vfioinit.edit.cmdline")

local M = {}

-- The options of the first BLS entry of a selected kernel (what the tool will edit), "" when
-- there is none, or nil, "PATH:LINE: why"; then the entry's "PATH:LINE".
local function current(ctx)
  for _, d in ipairs(places.boot_dirs(ctx, "loader/entries")) do
    for _, n in ipairs(ctx.dir(d.path) or {}) do
      local p = d.path .. "/" .. n
      local t = n:match("%.conf$") and ctx.read(p)
      local e, msg, line
      if t then e, msg, line = bootcfg.bls(t) end
      if t and not e then return nil, ("%s:%d: %s"):format(p, line, msg) end
      if e and e.options then
        if e.options:find("$", 1, true) then
          return nil, ("%s:%d: options refer to a GRUB variable (%s); vfioinit cannot tell the command line")
            :format(p, e.lines.options, e.options:match("%$%S*"))
        end
        return e.options, ("%s:%d"):format(p, e.lines.options)
      end
    end
  end
  return ""
end

function M.new(spec)
  local T = { name = spec.name, order = spec.order, covers = spec.covers, title = spec.command,
    record = cmdtool.path(spec.name), reads = { "bls", "uefi" } }
  function T.detect(ctx) return machine.command(ctx, spec.command) ~= nil end
  function T.files() return { T.record } end
  function T.edits(ctx, wants)
    local line, err = (spec.current or current)(ctx)
    if not line then return nil, err end
    local where = err
    local old, rerr = ctx.read(T.record)
    if rerr then return nil, rerr end
    -- ids an earlier apply added that this one does not name come out (ownids.lua)
    local drop, want = {}, ownids.wanted(wants)
    if want then
      for id in pairs(cmdtool.added(cmdtool.parse(old), line)) do
        if not want[id] then drop[id] = true end
      end
    end
    local ops, why = cmdtool.ops(line, wants, drop)
    if not ops then return nil, ("%s: %s"):format(T.record, why) end
    -- the tool writes a parameter at the end of the options: after a `--` it would be init's
    if #ops > 0 and select(2, cmdline.split(line)) then
      return nil, ("%s: options hold `--`, after which every word is init's, and %s adds parameters at the end: "
        .. "add them before the `--` by hand"):format(where, spec.name)
    end
    local new = cmdtool.record(spec.name, old, ops, spec.apply)
    if new == old then return {} end
    return { { path = T.record, before = old, after = new } }
  end
  -- after apply: the tool, for what the record's operations come to (giving a word again is
  -- a no-op); one word per parameter, else a tool given `X=a X=b` may keep both
  function T.regenerate(ctx)
    local ops = cmdtool.parse(ctx.read(T.record))
    if #ops == 0 then return nil end
    return spec.apply(cmdtool.net(ops))
  end
  -- after revert: the inverse of the record as it was
  function T.undo(before)
    local ops = cmdtool.parse(before)
    if #ops == 0 then return nil end
    return spec.undo(cmdtool.inverse(ops))
  end
  return T
end

-- The words of ops: the new ones (add, replace) and the ones to take away (remove).
function M.split(ops)
  local put, take = {}, {}
  for _, o in ipairs(ops) do
    if o.op == "remove" then take[#take + 1] = o.old else put[#put + 1] = o.new end
  end
  return put, take
end

return M
