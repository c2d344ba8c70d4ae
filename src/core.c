/*
** luaopen_vfioinit_core: the only exported symbol. Creates the module table;
** each src/<concern>.c adds its own sub-table (core.fs, core.image, ...)
** through its <concern>_open.
*/
#include "core.h"

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
	kmod_open(L);
	lock_open(L);
	shell_open(L);
	yaml_open(L);
	spawn_open(L);
	re_open(L);
	return 1;
}
