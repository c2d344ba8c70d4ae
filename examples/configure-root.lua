#!/usr/bin/env lua5.4
-- Configure the initramfs generator of a root for VFIO: detect, plan, print the diff,
-- apply (with backups; `vfioinit --root ROOT revert` undoes it). No rebuild unless
-- --rebuild is given. Also knows Alpine's mkinitfs, from generators/mkinitfs.lua
-- next to this script (see docs/REFERENCE.md "Extending and composing").
--
--   lua5.4 examples/configure-root.lua ROOT [--ids 10de:1b80,10de:10f0] [--rebuild]
local vfioinit = require "vfioinit"

local root, ids, rebuild = nil, nil, false
local i = 1
while arg[i] do
  if arg[i] == "--rebuild" then rebuild = true
  elseif arg[i] == "--ids" then i = i + 1; ids = arg[i]
  elseif not root then root = arg[i]
  else root = nil; break end
  i = i + 1
end
if not root then
  io.stderr:write("usage: configure-root.lua ROOT [--ids VVVV:DDDD,...] [--rebuild]\n")
  os.exit(1)
end

local function die(msg)
  io.stderr:write("configure-root: ", tostring(msg), "\n")
  os.exit(1)
end

-- a generator shipped as a user's file, registered before anything is detected
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local ext = loadfile(here .. "/generators/mkinitfs.lua")
if ext then vfioinit.register_generator(ext()) end

local inv, err = vfioinit.detect({ root = root })
if not inv then die(err) end
print(("root %s: %s, active generator %s, kernels: %s"):format(root, inv.distro.id or "unknown distribution",
  inv.active or "none", #inv.kernels > 0 and table.concat(inv.kernels, " ") or "none"))

local plan, perr = vfioinit.plan({ root = root, ids = ids })
if not plan then die(perr) end
for _, w in ipairs(plan.warnings or {}) do print("note: " .. w) end
if #plan.changes == 0 then
  print("already configured: nothing to change")
else
  io.write(plan:diff())
  local ok, aerr = plan:apply()
  if not ok then die(aerr) end
  print(("applied %d change(s); undo with: vfioinit --root %s revert"):format(#plan.changes, root))
end

if rebuild then
  local report, rerr = vfioinit.rebuild({ root = root, log = print })
  if not report then die(rerr) end
  print(("rebuilt %d image(s)"):format(#report.rebuilt))
else
  print("not rebuilt: run `vfioinit --root " .. root .. " rebuild` (or pass --rebuild)")
end
