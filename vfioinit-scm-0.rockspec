rockspec_format = "3.0"
package = "vfioinit"
version = "scm-0"
source = { url = "git+file://." }
description = {
  summary = "Put the VFIO modules into every initramfs so vfio-pci claims a passthrough GPU first",
  license = "MIT",
}
dependencies = { "lua >= 5.4, < 5.5" }
external_dependencies = {
  LIBKMOD = { header = "libkmod.h" },
  LIBARCHIVE = { header = "archive.h" },
  LIBPCRE2 = { header = "pcre2.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LIBDIR = "$(LIBDIR)",
    LUADIR_INSTALL = "$(LUADIR)",
  },
  install = {
    bin = { vfioinit = "bin/vfioinit" },
  },
}
