/*
** util.c: the helpers every src/<concern>.c shares (declared in core.h), so
** none of them is written twice: the error shape, the clock, the name of a
** file type, and the registration of a concern's sub-table and userdata class.
*/
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core.h"

int
vfi_push_errno(lua_State *L, const char *what, int err)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", what, strerror(err));
	lua_pushinteger(L, err);
	return 3;
}


double
vfi_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


const char *
vfi_kind_of(mode_t m)
{
	return S_ISFIFO(m) ? "fifo" : S_ISCHR(m) ? "character device" : S_ISBLK(m) ? "block device"
	     : S_ISSOCK(m) ? "socket" : S_ISDIR(m) ? "directory" : S_ISLNK(m) ? "symlink" : "unknown type";
}


void
vfi_register(lua_State *L, const char *name, const luaL_Reg *funcs)
{
	luaL_getsubtable(L, -1, name);
	luaL_setfuncs(L, funcs, 0);
	lua_pop(L, 1);
}


void
vfi_class(lua_State *L, const char *tname, const luaL_Reg *meta, const luaL_Reg *methods)
{
	if (luaL_newmetatable(L, tname)) {
		luaL_setfuncs(L, meta, 0);
		if (methods != NULL) {
			lua_newtable(L);
			luaL_setfuncs(L, methods, 0);
			lua_setfield(L, -2, "__index");
		}
	}
	lua_pop(L, 1);
}
