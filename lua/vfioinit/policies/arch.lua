--- Arch Linux and derivatives. mkinitcpio by default, but booster or dracut when
-- their pacman hook or kernel-install plugin is what builds the images, so the
-- generator is left to detection. Every installed kernel is rebuilt and verified.
local vfioinit = require "vfioinit"

return vfioinit.policy{
  name = "arch",
  description = "Arch Linux family: the detected generator (mkinitcpio, booster or dracut)",
  match = { "arch", "archarm", "manjaro", "manjaro-arm", "endeavouros", "garuda", "cachyos",
            "artix", "arcolinux", "steamos" },
  rebuild = true,
  verify = true,
}
