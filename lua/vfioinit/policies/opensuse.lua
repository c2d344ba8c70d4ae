--- openSUSE and SLE. dracut builds the images (images /boot/initrd-<kver>).
local vfioinit = require "vfioinit"

return vfioinit.policy{
  name = "opensuse",
  description = "openSUSE/SLE family: dracut drop-in /etc/dracut.conf.d/10-vfioinit.conf",
  match = { "opensuse", "opensuse-leap", "opensuse-tumbleweed", "opensuse-slowroll",
            "opensuse-microos", "sles", "sled", "sle-micro", "suse" },
  generators = { "dracut" },
  rebuild = true,
  verify = true,
}
