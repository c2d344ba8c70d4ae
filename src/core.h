/*
** vfioinit.core: thin C primitives under the Lua policy in lua/vfioinit/.
** The module is a table of sub-tables, one per concern: core.fs (fs.c),
** core.hash (hash.c), core.image (image.c), core.kmod (kmod.c), core.lock
** (lock.c), core.scan (shell.c, yaml.c), core.spawn (spawn.c), core.re (re.c). Each file adds
** its own with <concern>_open(L) on the module table on top of the stack. kmod.c and
** re.c are modules of their own (vfioinit.core.kmod, vfioinit.core.re: libkmod and
** libpcre2 are mapped only by a process that uses them), loaded on first use of
** core.kmod / core.re.
** Every path argument is a path inside a `root` argument, and errors name it
** as seen inside root. Expected failures push `nil, "what: strerror", errno`;
** misuse raises.
*/
#ifndef VFIOINIT_CORE_H
#define VFIOINIT_CORE_H

#include <sys/types.h>

#include <lua.h>
#include <lauxlib.h>

#include "compat.h"

#define VFIOINIT_CORE_VERSION "0.1.0"

/* ---- util.c: shared helpers ---- */

/* Push nil, "<what>: <strerror(err)>", err and return 3 (luaL_fileresult's shape). */
int vfi_push_errno(lua_State *L, const char *what, int err);
/* Seconds on the monotonic clock. */
double vfi_now(void);
/* What a file type is, in words: "fifo", "character device", "directory", ... */
const char *vfi_kind_of(mode_t mode);
/* Set `concern`.`name` = fn in the module table on top of the stack (the sub-table created when missing). */
void vfi_export(lua_State *L, const char *concern, const char *name, lua_CFunction fn);
/* Create metatable `tname`: `gc` as __gc and __close, `methods` (when not NULL) as __index. */
void vfi_class(lua_State *L, const char *tname, lua_CFunction gc, const luaL_Reg *methods);
/*
** The luaopen_ of a part of core in its own module (vfioinit.core.kmod, vfioinit.core.re):
** runs `open` on a stand-in module table and returns its `concern` sub-table, which
** src/core.c's core.<concern> then is. 1 (the sub-table pushed).
*/
int vfi_open_part(lua_State *L, const char *concern, void (*open)(lua_State *L));

/* ---- fs.c: the root-confined opens the other files read root through ---- */

/*
** Open a regular file inside root for reading (never blocks on a FIFO,
** refuses devices and sockets). 0 and *fd, or pushes nil, msg, errno -> 3.
*/
struct stat;
int vfi_open_regular(lua_State *L, const char *root, const char *path, int *fd, struct stat *st);
/* Open a directory inside root for reading. 0 or errno. */
int vfi_open_dir(lua_State *L, const char *root, const char *path, int *fd);
/* Argument n: a root (non-empty host dir, no NUL) / an absolute path inside root (no NUL). Raise otherwise. */
const char *vfi_checkroot(lua_State *L, int n);
const char *vfi_checkpath(lua_State *L, int n);

void fs_open(lua_State *L);
void hash_open(lua_State *L);
void moddep_open(lua_State *L);
void image_open(lua_State *L);
void pe_open(lua_State *L);
void kmod_open(lua_State *L);
void lock_open(lua_State *L);
void shell_open(lua_State *L);
void yaml_open(lua_State *L);
void spawn_open(lua_State *L);
void re_open(lua_State *L);

#endif
