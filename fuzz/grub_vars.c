/* fuzz/grub_vars.c: vfioinit.boot.loaders.grub.edit_default(text), the GRUB variable
** scanner (lua/vfioinit/boot/cmdline/grubvars.lua) and the in-place edit of
** /etc/default/grub it drives, on arbitrary bytes: every input ends (a hang is a crash)
** with the changes or nil and a message. */
#define FUZZ_MODULE "vfioinit.boot.loaders.grub"
#define FUZZ_FUNC "edit_default"
#include "lua_parser.h"
