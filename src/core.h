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

/*
** fs.c: open a regular file inside root for reading (never blocks on a FIFO,
** refuses devices and sockets). 0 and *fd, or pushes nil, msg, errno -> 3.
*/
struct stat;
int vfi_open_regular(lua_State *L, const char *root, const char *path, int *fd, struct stat *st);
/* fs.c: open a directory inside root for reading. 0 or errno. */
int vfi_open_dir(lua_State *L, const char *root, const char *path, int *fd);

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
