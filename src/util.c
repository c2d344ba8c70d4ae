/*
** util.c: the helpers every src/<concern>.c shares (declared in core.h), so
** none of them is written twice: the error shape, the clock, the name of a
** file type, the registration of a concern's sub-table and userdata class, and
** the opening of a part of core that is a module of its own.
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
vfi_export(lua_State *L, const char *concern, const char *name, lua_CFunction fn)
{
	luaL_getsubtable(L, -1, concern);
	lua_pushcfunction(L, fn);
	lua_setfield(L, -2, name);
	lua_pop(L, 1);
}


void
vfi_class(lua_State *L, const char *tname, lua_CFunction gc, const luaL_Reg *methods)
{
	if (luaL_newmetatable(L, tname)) {
		/* released by __close (a to-be-closed variable) or, at the latest, __gc */
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__close");
		if (methods != NULL) {
			lua_newtable(L);
			luaL_setfuncs(L, methods, 0);
			lua_setfield(L, -2, "__index");
		}
	}
	lua_pop(L, 1);
}


int
vfi_open_part(lua_State *L, const char *concern, void (*open)(lua_State *L))
{
	lua_newtable(L);
	open(L);
	lua_getfield(L, -1, concern);
	return 1;
}
