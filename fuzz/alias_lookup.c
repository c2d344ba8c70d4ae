/*
** fuzz/alias_lookup.c: core.moddep.aliases(root, moddir, modaliases, config) on arbitrary
** bytes (src/moddep.c): the input is the kernel's modules.alias and, as well, modprobe.d's
** alias lines; the modaliases asked are fixed PCI ones and the input's first line, so its
** patterns (wildcards, brackets, escapes) are matched against a string of their own too.
*/
#ifndef _GNU_SOURCE  /* tools/fuzz passes -D_GNU_SOURCE */
#define _GNU_SOURCE
#endif
#include "harness.h"
#include "input_file.h"


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	const char *root = fuzz_input_file("modules.alias", data, size);
	const char *nl = memchr(data, '\n', size);
	fuzz_push_fn(L, "moddep", "aliases");
	lua_pushstring(L, root);
	lua_pushliteral(L, "/");
	lua_createtable(L, 3, 0);
	lua_pushliteral(L, "pci:v00001AF4d00001000svFFFFFFFFsdFFFFFFFFbc03sc00i00");
	lua_rawseti(L, -2, 1);
	lua_pushliteral(L, "pci:v000010DEd00001C82svFFFFFFFFsdFFFFFFFFbcFFscFFiFF");
	lua_rawseti(L, -2, 2);
	lua_pushlstring(L, (const char *)data, nl ? (size_t)(nl - (const char *)data) : size);
	lua_rawseti(L, -2, 3);
	lua_pushlstring(L, (const char *)data, size);
	return 4;
}
