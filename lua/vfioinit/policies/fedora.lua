--- Fedora, RHEL and rebuilds. dracut builds every image there (kernel-install plugin
-- 50-dracut.install), so it is configured even before the dracut package is installed:
-- the drop-in is in place when the first kernel arrives.
local vfioinit = require("vfioinit")

-- Matches the os-release IDs of the family whose policy is "fedora" (vfioinit.machine).
return vfioinit.policy{
  name = "fedora",
  description = "Fedora/RHEL family: dracut drop-in /etc/dracut.conf.d/10-vfioinit.conf",
  generators = { "dracut" },
  rebuild = true,
  verify = true,
}
