--- Arch Linux and derivatives. mkinitcpio by default, but booster or dracut when
-- their pacman hook or kernel-install plugin is what builds the images, so the
-- generator is left to detection. Every installed kernel is rebuilt and verified.
local vfioinit = require("vfioinit")

-- Matches the os-release IDs of the family whose policy is "arch" (vfioinit.machine).
return vfioinit.policy{
  name = "arch",
  description = "Arch Linux family: the detected generator (mkinitcpio, booster or dracut)",
  rebuild = true,
  verify = true,
}
