/*
** moddep.c: how a kernel has some modules, from depmod's own text lists: loadable
** (a line of modules.dep names it) or built in (a line of modules.builtin does). What
** a read-only `verify` asks, answered without libkmod, which maps libcrypto (1.4 MB
** resident, 4 ms of start-up) for lookups verify does not make. The lists are read
** through fs.c (inside root, regular files only); a missing one lists nothing, as for
** libkmod.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define MAX_LIST (256L << 20)	/* a modules.dep this large is not depmod's */

/* Are module names a and b the same, '-' and '_' being one? */
static int
same_name(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return 0;
	for (size_t i = 0; i < an; i++) {
		char x = a[i] == '-' ? '_' : a[i], y = b[i] == '-' ? '_' : b[i];
		if (x != y)
			return 0;
	}
	return 1;
}


/* The module name of "dir/name.ko[.ext]" (p, n): *name and its length, or 0. */
static size_t
name_of(const char *p, size_t n, const char **name)
{
	const char *slash = memrchr(p, '/', n), *b = slash ? slash + 1 : p, *ko;
	size_t bn = n - (size_t)(b - p);
	for (ko = b; (ko = memchr(ko, '.', bn - (size_t)(ko - b))) != NULL; ko++) {
		size_t rest = bn - (size_t)(ko - b);
		if (rest >= 3 && memcmp(ko, ".ko", 3) == 0 && (rest == 3 || ko[3] == '.')) {
			*name = b;
			return (size_t)(ko - b);
		}
	}
	return 0;
}


/* Read a whole list inside root into a malloc'd buffer (*len bytes). 0, -1 (absent) or the values pushed. */
static int
slurp(lua_State *L, const char *root, const char *path, char **buf, size_t *len)
{
	struct stat st;
	int fd, n;
	size_t got = 0;
	if ((n = vfi_open_regular(L, root, path, &fd, &st)) != 0) {
		if (lua_tointeger(L, -1) == ENOENT) {
			lua_pop(L, n);
			return -1;
		}
		return n;
	}
	if (st.st_size > MAX_LIST || (*buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return vfi_push_errno(L, path, st.st_size > MAX_LIST ? EFBIG : ENOMEM);
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, *buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return 0;
}


/*
** Mark in the table at `out` each name of the array at `names` not marked yet that a line
** of `path` (inside root) names, as `state`; `dep`: lines are modules.dep's "path: deps".
** 0, or the values pushed.
*/
static int
scan(lua_State *L, const char *root, const char *path, int dep, int names, int out, const char *state)
{
	char *buf = NULL;
	size_t len = 0, nn = lua_rawlen(L, names);
	int r = slurp(L, root, path, &buf, &len);
	if (r != 0)
		return r < 0 ? 0 : r;
	for (const char *line = buf, *end = buf + len; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *stop;
		const char *name;
		size_t n;
		if (nl == NULL)
			nl = end;
		stop = dep ? memchr(line, ':', (size_t)(nl - line)) : nl;
		if (stop != NULL && (n = name_of(line, (size_t)(stop - line), &name)) > 0) {
			for (size_t i = 1; i <= nn; i++) {
				size_t wl;
				const char *w;
				lua_rawgeti(L, names, (lua_Integer)i);
				w = lua_tolstring(L, -1, &wl);
				if (same_name(w, wl, name, n)) {
					lua_pushvalue(L, -1);
					if (lua_rawget(L, out) == LUA_TNIL) {
						lua_pop(L, 1);
						lua_pushstring(L, state);
						lua_rawset(L, out);  /* out[w] = state; pops w */
						continue;
					}
					lua_pop(L, 1);
				}
				lua_pop(L, 1);
			}
		}
		line = nl + 1;
	}
	free(buf);
	return 0;
}


/***
 * How a kernel has some modules.
 * @function states
 * @tparam string root
 * @tparam string moddir `/lib/modules/<kver>` inside root
 * @tparam {string,...} names module names (`-` and `_` alike)
 * @treturn[1] table `{[name] = "module"|"builtin"}` for the names the kernel has (a name in
 *   both lists is "module"); the others are absent
 * @return[2] nil, "PATH: reason", errno (a FIFO or device where a list belongs, an I/O error)
 */
static int
moddep_states(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *moddir = vfi_checkpath(L, 2);
	int r;
	luaL_checktype(L, 3, LUA_TTABLE);
	for (size_t i = 1; i <= lua_rawlen(L, 3); i++) {
		if (lua_rawgeti(L, 3, (lua_Integer)i) != LUA_TSTRING)
			luaL_argerror(L, 3, "array of module names expected");
		lua_pop(L, 1);
	}
	lua_settop(L, 3);
	lua_newtable(L);  /* 4: the answer */
	lua_pushfstring(L, "%s/modules.dep", moddir);
	if ((r = scan(L, root, lua_tostring(L, -1), 1, 3, 4, "module")) != 0)
		return r;
	lua_pushfstring(L, "%s/modules.builtin", moddir);
	if ((r = scan(L, root, lua_tostring(L, -1), 0, 3, 4, "builtin")) != 0)
		return r;
	lua_settop(L, 4);
	return 1;
}


void
moddep_open(lua_State *L)
{
	vfi_export(L, "moddep", "states", moddep_states);
}
