rockspec_format = "3.0"
package = "vfioinit"
version = "0.1.0-1"
source = {
  url = "git+https://github.com/vfioinit/vfioinit.git",
  tag = "v0.1.0",
}
description = {
  summary = "Put the VFIO modules into every initramfs so vfio-pci claims a passthrough GPU first",
  detailed = [[
vfioinit puts the VFIO kernel modules (vfio, vfio_iommu_type1, vfio_pci and, on
kernels before 6.2, vfio_virqfd) into a Linux machine's initramfs, ordered before the
GPU drivers, so that vfio-pci claims a passthrough device before its native driver.
It detects the initramfs generators (mkinitcpio, dracut, initramfs-tools, booster),
edits their configuration through a plan with a unified diff, writes atomically with
backups and revert, rebuilds only stale images with the generator's own command and
reads every rebuilt image itself to verify the modules are inside. A Lua C extension
(require "vfioinit") with a CLI (vfioinit) and a man page. It also finds what boots each
kernel (UKIs, BLS entries, grub.cfg), rebuilds and verifies that, adds the IOMMU and
vfio-pci.ids parameters to the kernel command line on request, and binds one of two
identical devices by PCI address. Linux only; needs libkmod, zlib, libzstd, libarchive,
libpcre2-8 and libcrypto (headers and libraries) to build.
]],
  homepage = "https://github.com/vfioinit/vfioinit",
  issues_url = "https://github.com/vfioinit/vfioinit/issues",
  license = "MIT",
  labels = { "linux", "initramfs", "vfio" },
}
supported_platforms = { "linux" }
dependencies = { "lua >= 5.1, < 5.5" }
external_dependencies = {
  LIBKMOD = { header = "libkmod.h", library = "kmod" },
  LIBARCHIVE = { header = "archive.h", library = "archive" },
  ZLIB = { header = "zlib.h", library = "z" },
  LIBZSTD = { header = "zstd.h", library = "zstd" },
  LIBPCRE2 = { header = "pcre2.h", library = "pcre2-8" },
  LIBCRYPTO = { header = "openssl/pkcs7.h", library = "crypto" },
}
build = {
  type = "cmake",
  -- CMake builds for the Lua LuaRocks builds for (LUA_INCDIR) and falls back
  -- to LuaRocks' external_dependencies directories when pkg-config finds nothing.
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LIBDIR = "$(LIBDIR)",
    LUADIR_INSTALL = "$(LUADIR)",
    -- the command, with the #! line of LuaRocks' Lua, finds its modules in the tree itself
    VFIOINIT_INSTALL_COMMAND = "ON",
    VFIOINIT_INTERPRETER = "$(LUA)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LIBKMOD_INCDIR = "$(LIBKMOD_INCDIR)",
    LIBKMOD_LIBDIR = "$(LIBKMOD_LIBDIR)",
    LIBARCHIVE_INCDIR = "$(LIBARCHIVE_INCDIR)",
    LIBARCHIVE_LIBDIR = "$(LIBARCHIVE_LIBDIR)",
    ZLIB_INCDIR = "$(ZLIB_INCDIR)",
    ZLIB_LIBDIR = "$(ZLIB_LIBDIR)",
    LIBZSTD_INCDIR = "$(LIBZSTD_INCDIR)",
    LIBZSTD_LIBDIR = "$(LIBZSTD_LIBDIR)",
    LIBPCRE2_INCDIR = "$(LIBPCRE2_INCDIR)",
    LIBPCRE2_LIBDIR = "$(LIBPCRE2_LIBDIR)",
    LIBCRYPTO_INCDIR = "$(LIBCRYPTO_INCDIR)",
    LIBCRYPTO_LIBDIR = "$(LIBCRYPTO_LIBDIR)",
  },
}
-- not wrapped in a shell script that starts the LuaRocks loader (a subprocess and 15 ms of
-- every run): the command needs nothing of LuaRocks
deploy = { wrap_bin_scripts = false }
