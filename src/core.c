/*
** luaopen_vfioinit_core: the only exported symbol. Creates the module table;
** each src/<concern>.c adds its own sub-table (core.fs, core.image, ...)
** through its <concern>_open.
**
** core.kmod, core.re and core.sig are modules of their own (vfioinit.core.kmod,
** vfioinit.core.re, vfioinit.core.sig, in vfioinit/core/ beside core.so), required
** the first time a caller reads core.kmod, core.re or core.sig: libkmod pulls in
** libcrypto (1.4 MB resident before anything is read), libpcre2 serves only --match
** and libcrypto (core.sig) only signature checks, so a process that reads an image
** (verify, bench/image-list) maps none of them. Callers see no difference.
*/
#include <string.h>

#include "core.h"

static const struct { const char *concern, *module; } parts[] = {
	{"kmod", "vfioinit.core.kmod"},
	{"re", "vfioinit.core.re"},
	{"sig", "vfioinit.core.sig"},
};

/* __index of the module table: core.kmod / core.re / core.sig loaded on first read, then kept. */
static int
core_index(lua_State *L)
{
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
	size_t i;
	for (i = 0; k != NULL && i < sizeof parts / sizeof parts[0]; i++) {
		if (strcmp(k, parts[i].concern) != 0)
			continue;
		lua_getglobal(L, "require");
		lua_pushstring(L, parts[i].module);
		if (lua_pcall(L, 1, 1, 0) != LUA_OK)
			return luaL_error(L, "vfioinit.core: core.%s is the module %s, which did not load: %s",
			    k, parts[i].module, lua_tostring(L, -1));
		lua_pushvalue(L, 2);
		lua_pushvalue(L, -2);
		lua_rawset(L, 1);  /* kept: __index is not asked again */
		return 1;
	}
	return 0;
}

__attribute__((visibility("default"))) int
luaopen_vfioinit_core(lua_State *L)
{
	lua_newtable(L);
	lua_pushliteral(L, VFIOINIT_CORE_VERSION);
	lua_setfield(L, -2, "_VERSION");
#ifdef VFIOINIT_TESTING
	lua_pushboolean(L, 1);
#else
	lua_pushboolean(L, 0);
#endif
	lua_setfield(L, -2, "_TESTING");  /* built with the test hooks (VFIOINIT_FAULT, ...) */
	fs_open(L);
	hash_open(L);
	image_open(L);
	pe_open(L);
	lock_open(L);
	shell_open(L);
	yaml_open(L);
	spawn_open(L);
	lua_newtable(L);
	lua_pushcfunction(L, core_index);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, -2);
	return 1;
}
