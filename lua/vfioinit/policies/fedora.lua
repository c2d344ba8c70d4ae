--- Fedora, RHEL and rebuilds. dracut builds every image there (kernel-install plugin
-- 50-dracut.install), so it is configured even before the dracut package is installed:
-- the drop-in is in place when the first kernel arrives.
local vfioinit = require "vfioinit"

return vfioinit.policy{
  name = "fedora",
  description = "Fedora/RHEL family: dracut drop-in /etc/dracut.conf.d/10-vfioinit.conf",
  match = { "fedora", "rhel", "centos", "rocky", "almalinux", "ol", "nobara", "amzn" },
  generators = { "dracut" },
  rebuild = true,
  verify = true,
}
