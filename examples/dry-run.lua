#!/usr/bin/env lua5.4
-- Print the unified diff of what vfioinit would change in ROOT, and nothing else.
-- Writes nothing. Exit status: 0 nothing to change, 2 changes pending, 1 error.
--
--   lua5.4 examples/dry-run.lua ROOT > vfio.diff && patch -p0 -d ROOT < vfio.diff
local vfioinit = require "vfioinit"

local root = arg[1]
if not root or arg[2] then
  io.stderr:write("usage: dry-run.lua ROOT\n")
  os.exit(1)
end
local plan, err = vfioinit.plan({ root = root })
if not plan then
  io.stderr:write("dry-run: ", err, "\n")
  os.exit(1)
end
io.write(plan:diff())
os.exit(#plan.changes == 0 and 0 or 2)
