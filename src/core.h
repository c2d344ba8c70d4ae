/*
** vfioinit.core: thin C primitives under the Lua policy in lua/vfioinit/.
** Each src/<concern>.c registers its functions with <concern>_open(L), which
** adds them to the module table on top of the stack (luasystem's layout).
** Expected failures push `nil, "what: strerror", errno`; misuse raises.
*/
#ifndef VFIOINIT_CORE_H
#define VFIOINIT_CORE_H

#include <lua.h>
#include <lauxlib.h>

#include "compat.h"

#define VFIOINIT_CORE_VERSION "0.1.0"

/* Push nil, "<what>: <strerror(err)>", err and return 3 (luaL_fileresult's shape). */
int vfi_push_errno(lua_State *L, const char *what, int err);
/* Push nil, msg and return 2. */
int vfi_push_fail(lua_State *L, const char *fmt, ...);

void fs_open(lua_State *L);
void kmod_open(lua_State *L);
void shell_open(lua_State *L);
void yaml_open(lua_State *L);
void regex_open(lua_State *L);
void spawn_open(lua_State *L);
void image_open(lua_State *L);
void lock_open(lua_State *L);
void hash_open(lua_State *L);

#endif
