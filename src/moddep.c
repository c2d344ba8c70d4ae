/*
** moddep.c: how a kernel has some modules, from depmod's own text lists: loadable
** (a line of modules.dep names it) or built in (a line of modules.builtin does). What
** a read-only `verify` asks, answered without libkmod, which maps libcrypto (1.4 MB
** resident, 4 ms of start-up) for lookups verify does not make. The lists are read
** through fs.c (inside root, regular files only); a missing one lists nothing, as for
** libkmod.
*/
#include <errno.h>
#include <fnmatch.h>
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


/* An array of strings on the stack, as C pointers into the Lua strings (alive while the array is). */
struct strs {
	size_t n;
	const char **s;
	size_t *len;
};


/* Fill *v from the array at `idx` (strings, checked by the caller): 0, or -1 out of memory. */
static int
strs_of(lua_State *L, int idx, struct strs *v)
{
	v->n = lua_rawlen(L, idx);
	v->s = malloc((v->n + 1) * sizeof *v->s);
	v->len = malloc((v->n + 1) * sizeof *v->len);
	if (v->s == NULL || v->len == NULL) {
		free(v->s);
		free(v->len);
		v->s = NULL, v->len = NULL;
		return -1;
	}
	for (size_t i = 0; i < v->n; i++) {
		lua_rawgeti(L, idx, (lua_Integer)i + 1);
		v->s[i] = lua_tolstring(L, -1, &v->len[i]);
		lua_pop(L, 1);  /* the array keeps the string */
	}
	return 0;
}


/* Free what strs_of allocated (nothing, after it failed). */
static void
strs_free(struct strs *v)
{
	free(v->s);
	free(v->len);
}


/*
** Mark in the table at `out` each name of the array at `names` not marked yet that a line
** of `path` (inside root) names, as `state`; `dep`: lines are modules.dep's "path: deps".
** 0, or the values pushed.
*/
static int
scan(lua_State *L, const char *root, const char *path, int dep, int names, int out, const char *state)
{
	char *buf = NULL, *done;
	size_t len = 0;
	struct strs w = {0, NULL, NULL};
	int r = slurp(L, root, path, &buf, &len);
	if (r != 0)
		return r < 0 ? 0 : r;
	if (strs_of(L, names, &w) != 0 || (done = calloc(w.n + 1, 1)) == NULL) {
		strs_free(&w);
		free(buf);
		return vfi_push_errno(L, path, ENOMEM);
	}
	for (size_t i = 0; i < w.n; i++) {
		lua_pushlstring(L, w.s[i], w.len[i]);
		done[i] = lua_rawget(L, out) != LUA_TNIL;
		lua_pop(L, 1);
	}
	for (const char *line = buf, *end = buf + len; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line)), *stop;
		const char *name;
		size_t n;
		if (nl == NULL)
			nl = end;
		stop = dep ? memchr(line, ':', (size_t)(nl - line)) : nl;
		if (stop != NULL && (n = name_of(line, (size_t)(stop - line), &name)) > 0) {
			for (size_t i = 0; i < w.n; i++) {
				if (!done[i] && same_name(w.s[i], w.len[i], name, n)) {
					done[i] = 1;
					lua_pushlstring(L, w.s[i], w.len[i]);
					lua_pushstring(L, state);
					lua_rawset(L, out);  /* out[name] = state */
				}
			}
		}
		line = nl + 1;
	}
	strs_free(&w);
	free(done);
	free(buf);
	return 0;
}


/* Raise unless argument arg is an array of strings. */
static void
check_strings(lua_State *L, int arg, const char *what)
{
	luaL_checktype(L, arg, LUA_TTABLE);
	for (size_t i = 1; i <= lua_rawlen(L, arg); i++) {
		if (lua_rawgeti(L, arg, (lua_Integer)i) != LUA_TSTRING)
			luaL_argerror(L, arg, what);
		lua_pop(L, 1);
	}
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
	check_strings(L, 3, "array of module names expected");
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


/*
** Does alias pattern (p, pn) match modalias a, as libkmod's fnmatch(pattern, a, 0)? The
** pattern's literal head is compared first: most lines of modules.alias are ruled out
** there without copying them.
*/
static int
alias_match(const char *p, size_t pn, const char *a, size_t an, char *tmp)
{
	size_t i;
	for (i = 0; i < pn && p[i] != '*' && p[i] != '?' && p[i] != '[' && p[i] != '\\'; i++)
		if (i >= an || p[i] != a[i])
			return 0;
	if (i == pn)
		return pn == an;
	memcpy(tmp, p, pn);
	tmp[pn] = '\0';
	return fnmatch(tmp, a, 0) == 0;
}

/*
** For each modalias of the array at `as` whose entry in the table at `out` is still empty, add
** the modules whose alias pattern matches it: entries (p, n) separated by `sep`, each
** "alias PATTERN MODULE" (modules.alias) or, for modinfo, "MODULE.alias=PATTERN".
*/
static int
alias_scan(lua_State *L, const char *buf, size_t len, char sep, int modinfo, int as, int out)
{
	struct strs a = {0, NULL, NULL};
	/* the modaliases an earlier source answered, which this one does not */
	char *tmp = malloc(len + 1), *had = NULL;
	if (tmp == NULL || strs_of(L, as, &a) != 0 || (had = calloc(a.n + 1, 1)) == NULL) {
		free(tmp);
		strs_free(&a);
		return vfi_push_errno(L, "alias lookup", ENOMEM);
	}
	for (size_t i = 0; i < a.n; i++) {
		lua_rawgeti(L, out, (lua_Integer)i + 1);
		had[i] = lua_rawlen(L, -1) > 0;
		lua_pop(L, 1);
	}
	for (const char *line = buf, *end = buf + len; line < end;) {
		const char *nl = memchr(line, sep, (size_t)(end - line)), *pat, *mod, *pe, *me;
		if (nl == NULL)
			nl = end;
		if (modinfo) {
			const char *eq = memchr(line, '=', (size_t)(nl - line));
			if (eq == NULL || eq - line < 7 || memcmp(eq - 6, ".alias", 6) != 0)
				goto next;
			mod = line, me = eq - 6, pat = eq + 1, pe = nl;
		} else {
			if (nl - line < 7 || memcmp(line, "alias ", 6) != 0)
				goto next;
			pat = line + 6;
			if ((pe = memchr(pat, ' ', (size_t)(nl - pat))) == NULL)
				goto next;
			mod = pe + 1, me = nl;
			while (me > mod && (me[-1] == ' ' || me[-1] == '\r'))
				me--;
		}
		if (me == mod)
			goto next;
		for (size_t i = 0; i < a.n; i++) {
			if (!had[i] && alias_match(pat, (size_t)(pe - pat), a.s[i], a.len[i], tmp)) {
				lua_rawgeti(L, out, (lua_Integer)i + 1);
				lua_pushlstring(L, mod, (size_t)(me - mod));
				lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
				lua_pop(L, 1);
			}
		}
	next:
		line = nl + 1;
	}
	free(tmp);
	free(had);
	strs_free(&a);
	return 0;
}


/* Has every modalias of the answer at `out` a module already? */
static int
all_answered(lua_State *L, int out)
{
	for (size_t i = 1; i <= lua_rawlen(L, out); i++) {
		size_t n;
		lua_rawgeti(L, out, (lua_Integer)i);
		n = lua_rawlen(L, -1);
		lua_pop(L, 1);
		if (n == 0)
			return 0;
	}
	return 1;
}


/***
 * The modules a kernel lists for some modaliases, as libkmod's lookup finds them: the first
 * of these sources with a pattern matching the modalias answers for it: `config` (modprobe.d's
 * `alias` lines), modules.alias, the built-in modules' aliases (modules.builtin.modinfo,
 * what depmod builds modules.builtin.alias.bin from; not read when the others answered for
 * every modalias).
 * @function aliases
 * @tparam string root
 * @tparam string moddir `/lib/modules/<kver>` inside root
 * @tparam {string,...} modaliases
 * @tparam[opt] string config modprobe.d's alias lines, "alias PATTERN MODULE\n" each
 * @treturn[1] {{string,...},...} the module names (as the lists write them) for each modalias
 * @treturn[2] false when root has no modules.alias (libkmod's binary index may still answer)
 * @return[3] nil, "PATH: reason", errno
 */
static int
moddep_aliases(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *moddir = vfi_checkpath(L, 2);
	static const char *const lists[] = {"modules.alias", "modules.builtin.modinfo"};
	size_t clen;
	const char *config;
	int r;
	check_strings(L, 3, "array of modaliases expected");
	config = luaL_optlstring(L, 4, "", &clen);
	lua_settop(L, 4);
	lua_createtable(L, (int)lua_rawlen(L, 3), 0);  /* 5: the answer */
	for (size_t i = 1; i <= lua_rawlen(L, 3); i++) {
		lua_newtable(L);
		lua_rawseti(L, 5, (lua_Integer)i);
	}
	if ((r = alias_scan(L, config, clen, '\n', 0, 3, 5)) != 0)
		return r;
	for (int l = 0; l < 2; l++) {
		char *buf = NULL;
		size_t len = 0;
		if (l > 0 && all_answered(L, 5))
			break;  /* libkmod stops at the first source that answers */
		lua_pushfstring(L, "%s/%s", moddir, lists[l]);
		r = slurp(L, root, lua_tostring(L, -1), &buf, &len);
		if (r > 0)
			return r;
		lua_settop(L, 5);
		if (r < 0) {
			if (l == 0) {
				lua_pushboolean(L, 0);
				return 1;
			}
			continue;
		}
		r = alias_scan(L, buf, len, l ? '\0' : '\n', l, 3, 5);
		free(buf);
		if (r != 0)
			return r;
	}
	return 1;
}


void
moddep_open(lua_State *L)
{
	vfi_export(L, "moddep", "states", moddep_states);
	vfi_export(L, "moddep", "aliases", moddep_aliases);
}
