-- grubby (Fedora, RHEL: BLS entries under /boot/loader/entries): `grubby --update-kernel=ALL
-- --args="..."` adds a parameter or replaces the value of one of the same name, so a merged
-- vfio_pci.ids=... keeps the user's spelling; revert runs `--remove-args` for what was added
-- and `--args` with the old word for what was replaced (the record: cmdtool.lua).
local toolbase = require("vfioinit.boot.cmdline.toolbase")

local function args(flag, list) return flag .. "=" .. table.concat(list, " ") end

return toolbase.new({
  name = "grubby", command = "grubby", order = 10,
  covers = { grub = true },  -- grubby keeps /etc/default/grub in step itself
  apply = function(ops)
    local put = toolbase.split(ops)
    return { { "grubby", "--update-kernel=ALL", args("--args", put) } }
  end,
  undo = function(ops)
    local put, take = toolbase.split(ops)
    local out = {}
    if #take > 0 then out[#out + 1] = { "grubby", "--update-kernel=ALL", args("--remove-args", take) } end
    if #put > 0 then out[#out + 1] = { "grubby", "--update-kernel=ALL", args("--args", put) } end
    return out
  end,
})
