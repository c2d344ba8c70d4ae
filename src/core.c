/*
** luaopen_vfioinit_core: the only exported symbol. Builds the module table
** from one <concern>_open per source file.
*/
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "core.h"

int
vfi_push_errno(lua_State *L, const char *what, int err)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", what, strerror(err));
	lua_pushinteger(L, err);
	return 3;
}


int
vfi_push_fail(lua_State *L, const char *fmt, ...)
{
	va_list ap;
	lua_pushnil(L);
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	return 2;
}


__attribute__((visibility("default"))) int
luaopen_vfioinit_core(lua_State *L)
{
	lua_newtable(L);
	lua_pushliteral(L, VFIOINIT_CORE_VERSION);
	lua_setfield(L, -2, "_VERSION");
	fs_open(L);
	kmod_open(L);
	shell_open(L);
	yaml_open(L);
	regex_open(L);
	spawn_open(L);
	image_open(L);
	lock_open(L);
	hash_open(L);
	return 1;
}
