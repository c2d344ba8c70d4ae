-- rpm-ostree (Fedora Atomic, bootc images that ship it): `rpm-ostree kargs` makes a new
-- deployment from the default one with the arguments changed (previous ones never change).
-- The record /etc/vfioinit/rpm-ostree.cmdline (cmdtool.lua) holds vfioinit's operations: after
-- apply `--append-if-missing=WORD` (and `--replace=KEY=OLD=NEW` where vfio-pci.ids is merged),
-- after revert `--delete-if-present=WORD` (`--replace=KEY=NEW=OLD`). rpm-ostree acts through
-- its daemon on the running system: another root is refused.
local toolbase = require("vfioinit.boot.cmdline.toolbase")
local base = require("vfioinit.boot.loaders.ostree_kargs")

-- --replace=KEY=VALUE=NEWVALUE from two words of one parameter
local function replace(old, new)
  local key, v = old:match("^([^=]+)=(.*)$")
  return ("--replace=%s=%s=%s"):format(key or old, v or "", new:match("^[^=]*=(.*)$") or "")
end

local function commands(ops)
  local argv = { "rpm-ostree", "kargs" }
  for _, o in ipairs(ops) do
    if o.op == "add" then argv[#argv + 1] = "--append-if-missing=" .. o.new
    elseif o.op == "remove" then argv[#argv + 1] = "--delete-if-present=" .. o.old
    else argv[#argv + 1] = replace(o.old, o.new) end
  end
  return { argv }
end

local function current(ctx)
  if not ctx.ostree.booted then
    return nil, ("%s: rpm-ostree changes the running system only (its daemon acts on the booted deployment): "
      .. "run vfioinit on that system, with root /"):format(ctx.ostree.uroot)
  end
  return base.current_line(ctx)
end

local T = toolbase.new({ name = "rpm_ostree_kargs", command = "rpm-ostree", current = current,
  apply = commands, undo = commands, order = 90 })
T.ostree, T.reads = true, base.reads_default  -- a target of ostree deployments only

function T.detect(ctx)
  local o = ctx.ostree
  return o ~= nil and o.kind == "deployed" and o.tool == "rpm-ostree"
end

return T
