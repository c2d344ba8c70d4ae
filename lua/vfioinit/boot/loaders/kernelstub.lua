-- kernelstub (Pop!_OS: it copies the kernel to the ESP and writes the systemd-boot entry
-- from /etc/kernelstub/configuration): `kernelstub -a "..."` adds options, `-d` deletes
-- them. A merged parameter is deleted in its old form and added in the new one; revert
-- runs the inverse for exactly the recorded words (cmdtool.lua).
local toolbase = require("vfioinit.boot.cmdline.toolbase")

local function run(flag, list) return { "kernelstub", flag, table.concat(list, " ") } end

-- Words to delete and to add for ops (a replace deletes the old word, adds the new; the
-- words an earlier apply wrote in between, `also`, are deleted too).
local function split(ops)
  local add, del = {}, {}
  for _, o in ipairs(ops) do
    for _, w in ipairs(o.also or {}) do del[#del + 1] = w end
    if o.op == "remove" then del[#del + 1] = o.old
    elseif o.op == "replace" then del[#del + 1] = o.old; add[#add + 1] = o.new
    else add[#add + 1] = o.new end
  end
  return add, del
end

local function commands(ops)
  local add, del = split(ops)
  local out = {}
  if #del > 0 then out[#out + 1] = run("-d", del) end
  if #add > 0 then out[#out + 1] = run("-a", add) end
  return out
end

return toolbase.new({ name = "kernelstub", command = "kernelstub", order = 20, apply = commands, undo = commands })
