/*
** luaopen_vfioinit_core: the only exported symbol. Creates the module table;
** each src/<concern>.c adds its own sub-table (core.fs, core.image, ...)
** through its <concern>_open.
**
** core.kmod, core.re, core.sig and core.image.list are modules of their own
** (vfioinit.core.kmod, vfioinit.core.re, vfioinit.core.sig, vfioinit.core.image, in
** vfioinit/core/ beside core.so), required the first time a caller reads core.kmod,
** core.re, core.sig or core.image.list: libkmod pulls in libcrypto (1.4 MB resident
** before anything is read), libpcre2 serves only --match, libcrypto (core.sig) only
** signature checks, and zlib and libzstd only the reading of an image (which loads
** vfioinit.core.archive, libarchive with libxml2, ICU and libstdc++, only for the rarer
** compressions: src/unpack.h). So a process that reads an image (verify,
** bench/image-list) maps none of libkmod, libpcre2, libcrypto, and one that reads none
** (--version, a verify answered by fingerprints) no decompressor. Callers see no difference.
*/
#include <string.h>

#include "core.h"

/* A field of `table` ("" for core itself) that is the module `module` or one of its fields. */
static const struct { const char *table, *field, *module; } parts[] = {
	{"", "kmod", "vfioinit.core.kmod"},
	{"", "re", "vfioinit.core.re"},
	{"", "sig", "vfioinit.core.sig"},
	{"image", "list", "vfioinit.core.image"},
};

/*
** __index of the module table and of core.image (upvalue: the table's name): the part
** loaded on first read, then kept.
*/
static int
core_index(lua_State *L)
{
	const char *t = lua_tostring(L, lua_upvalueindex(1));
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
	size_t i;
	for (i = 0; k != NULL && i < sizeof parts / sizeof parts[0]; i++) {
		if (strcmp(t, parts[i].table) != 0 || strcmp(k, parts[i].field) != 0)
			continue;
		lua_getglobal(L, "require");
		lua_pushstring(L, parts[i].module);
		if (lua_pcall(L, 1, 1, 0) != LUA_OK)
			return luaL_error(L, "vfioinit.core: core.%s%s%s is the module %s, which did not load: %s",
			    t, *t ? "." : "", k, parts[i].module, lua_tostring(L, -1));
		if (*t)
			lua_getfield(L, -1, k);
		lua_pushvalue(L, 2);
		lua_pushvalue(L, -2);
		lua_rawset(L, 1);  /* kept: __index is not asked again */
		return 1;
	}
	return 0;
}

/* Give the table on top the __index that loads its parts; `name` as in parts[]. */
static void
lazy(lua_State *L, const char *name)
{
	lua_newtable(L);
	lua_pushstring(L, name);
	lua_pushcclosure(L, core_index, 1);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, -2);
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
	moddep_open(L);
	pe_open(L);
	lua_getfield(L, -1, "image");
	lazy(L, "image");
	lua_pop(L, 1);
	lock_open(L);
	shell_open(L);
	yaml_open(L);
	spawn_open(L);
	lazy(L, "");
	return 1;
}
