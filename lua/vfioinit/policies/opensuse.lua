--- openSUSE and SLE. dracut builds the images (images /boot/initrd-<kver>).
local vfioinit = require("vfioinit")

-- Matches the os-release IDs of the family whose policy is "opensuse" (vfioinit.machine).
return vfioinit.policy{
  name = "opensuse",
  description = "openSUSE/SLE family: dracut drop-in /etc/dracut.conf.d/10-vfioinit.conf",
  generators = { "dracut" },
  rebuild = true,
  verify = true,
}
