-- UKIs on the ESP (systemd-boot's type #2 entries, `<dir>/EFI/Linux/*.efi` of each boot
-- directory, lua/vfioinit/boot/places.lua): each one whose `.uname` (else its file name) is
-- the kernel is a chain; systemd-boot's loader.conf `default` glob marks its default. The
-- planned UKIs (what a rebuild writes) come before these, with the same loader name.
local places = require("vfioinit.boot.places")

local M = { name = "uefi", order = 23 }

function M.chains(st, kver)
  local out = {}
  for _, d in ipairs(places.boot_dirs(st.ctx, "EFI/Linux")) do
    for _, n in ipairs(st.ctx.dir(d.path) or {}) do
      local path = d.path .. "/" .. n
      if n:lower():match("%.efi$") and st:uki_boots(path, kver) then
        local by = st:sdboot_default(n)
        out[#out + 1] = st:uki(kver, path, "esp: " .. path, "uefi", { default = by and true or nil, default_by = by })
      end
    end
  end
  return out
end

return M
