--- Debian, Ubuntu and derivatives. initramfs-tools by default; dracut where its
-- /etc/kernel/postinst.d hook replaced it, so the generator is left to detection.
-- initramfs-tools loads /etc/initramfs-tools/modules only after udev has bound
-- devices: pass device IDs (`ids`) so /etc/modprobe.d/vfioinit.conf makes vfio-pci win.
local vfioinit = require("vfioinit")

-- Matches the os-release IDs of the family whose policy is "debian" (vfioinit.machine).
return vfioinit.policy{
  name = "debian",
  description = "Debian/Ubuntu family: the detected generator (initramfs-tools or dracut)",
  rebuild = true,
  verify = true,
}
