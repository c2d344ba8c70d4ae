/*
** libkmod lookups for one kernel's module tree. A context is rooted at
** <root>/lib/modules/<kver> and reads modprobe.d only from the dirs the
** caller names, so the host's configuration never leaks into an answer
** about another root.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libkmod.h>

#include "core.h"

#define KMOD_T "vfioinit.Kmod"

typedef struct {
	struct kmod_ctx *ctx;  /* NULL once closed */
} Kmod;


static Kmod *
checkkmod(lua_State *L)
{
	Kmod *k = (Kmod *)luaL_checkudata(L, 1, KMOD_T);
	if (k->ctx == NULL)
		luaL_error(L, "attempt to use a closed kmod context");
	return k;
}


static void
silent_log(void *data, int priority, const char *file, int line,
	   const char *fn, const char *format, va_list args)
{
	(void)data; (void)priority; (void)file; (void)line; (void)fn;
	(void)format; (void)args;
}


/* kmod_new(moddir [, {config_dir...}]) */
static int
kmod_l_new(lua_State *L)
{
	const char *moddir = luaL_checkstring(L, 1);
	const char **configs;
	size_t n = 0, i;
	Kmod *k;
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		n = lua_rawlen(L, 2);
	}
	/* closed handle first: an allocation error below leaves a safe object */
	k = (Kmod *)lua_newuserdatauv(L, sizeof(Kmod), 0);
	k->ctx = NULL;
	luaL_setmetatable(L, KMOD_T);
	configs = (const char **)lua_newuserdatauv(L, (n + 1) * sizeof(char *), 0);
	for (i = 0; i < n; i++) {
		lua_rawgeti(L, 2, (lua_Integer)i + 1);
		configs[i] = luaL_checkstring(L, -1);
		lua_pop(L, 1);  /* still referenced by the table */
	}
	configs[n] = NULL;
	errno = 0;
	k->ctx = kmod_new(moddir, configs);
	if (k->ctx == NULL)
		return vfi_push_errno(L, moddir, errno ? errno : ENOMEM);
	kmod_set_log_fn(k->ctx, silent_log, NULL);
	if (kmod_load_resources(k->ctx) < 0) {
		/* no indexes: fall back to the text files, as modprobe does */
	}
	lua_pop(L, 1);
	return 1;
}


static int
kmod_l_close(lua_State *L)
{
	Kmod *k = (Kmod *)luaL_checkudata(L, 1, KMOD_T);
	if (k->ctx != NULL) {
		kmod_unref(k->ctx);
		k->ctx = NULL;
	}
	return 0;
}


/* Push the names of a module list as a Lua array. */
static void
push_names(lua_State *L, struct kmod_list *list)
{
	struct kmod_list *l;
	int i = 0;
	lua_newtable(L);
	kmod_list_foreach(l, list) {
		struct kmod_module *m = kmod_module_get_module(l);
		lua_pushstring(L, kmod_module_get_name(m));
		lua_rawseti(L, -2, ++i);
		kmod_module_unref(m);
	}
}


/*
** ctx:module(name) -> {name=, state=, path=, deps=} | nil
** A lookup by name finds loadable modules (modules.dep) and built-in ones
** (modules.builtin); a built-in module has no path.
*/
static int
kmod_l_module(lua_State *L)
{
	Kmod *k = checkkmod(L);
	const char *name = luaL_checkstring(L, 2);
	struct kmod_module *mod = NULL;
	struct kmod_list *deps;
	const char *path;
	int err;
	err = kmod_module_new_from_name(k->ctx, name, &mod);
	if (err < 0)
		return vfi_push_errno(L, name, -err);
	path = kmod_module_get_path(mod);
	if (path == NULL) {
		/* not in modules.dep: built in, or missing. Ask the builtin index. */
		struct kmod_list *list = NULL, *l;
		int builtin = 0;
		kmod_module_unref(mod);
		mod = NULL;
		err = kmod_module_new_from_lookup(k->ctx, name, &list);
		if (err < 0)
			return vfi_push_errno(L, name, -err);
		kmod_list_foreach(l, list) {
			struct kmod_module *m = kmod_module_get_module(l);
			if (mod == NULL && kmod_module_get_path(m) == NULL &&
			    kmod_module_get_initstate(m) == KMOD_MODULE_BUILTIN)
				builtin = 1;
			kmod_module_unref(m);
		}
		kmod_module_unref_list(list);
		if (!builtin) {
			lua_pushnil(L);
			return 1;
		}
		lua_createtable(L, 0, 3);
		lua_pushstring(L, name);
		lua_setfield(L, -2, "name");
		lua_pushliteral(L, "builtin");
		lua_setfield(L, -2, "state");
		lua_newtable(L);
		lua_setfield(L, -2, "deps");
		return 1;
	}
	lua_createtable(L, 0, 4);
	lua_pushstring(L, kmod_module_get_name(mod));
	lua_setfield(L, -2, "name");
	lua_pushliteral(L, "module");
	lua_setfield(L, -2, "state");
	lua_pushstring(L, path);
	lua_setfield(L, -2, "path");
	deps = kmod_module_get_dependencies(mod);
	push_names(L, deps);
	kmod_module_unref_list(deps);
	lua_setfield(L, -2, "deps");
	kmod_module_unref(mod);
	return 1;
}


static int
cmpstr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}


/* ctx:lookup(modalias) -> sorted unique array of module names */
static int
kmod_l_lookup(lua_State *L)
{
	Kmod *k = checkkmod(L);
	const char *alias = luaL_checkstring(L, 2);
	struct kmod_list *list = NULL, *l;
	const char **names;
	size_t n = 0, i, out = 0;
	int err = kmod_module_new_from_lookup(k->ctx, alias, &list);
	if (err < 0)
		return vfi_push_errno(L, alias, -err);
	kmod_list_foreach(l, list) n++;
	names = (const char **)lua_newuserdatauv(L, (n ? n : 1) * sizeof(char *), 0);
	i = 0;
	kmod_list_foreach(l, list) {
		struct kmod_module *m = kmod_module_get_module(l);
		lua_pushstring(L, kmod_module_get_name(m));  /* keep the string alive on the stack */
		names[i++] = lua_tostring(L, -1);
		kmod_module_unref(m);
	}
	kmod_module_unref_list(list);
	qsort(names, n, sizeof(char *), cmpstr);
	lua_newtable(L);
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(names[i], names[i - 1]) == 0)
			continue;
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, (lua_Integer)++out);
	}
	return 1;
}


static const luaL_Reg kmod_methods[] = {
	{"close", kmod_l_close},
	{"lookup", kmod_l_lookup},
	{"module", kmod_l_module},
	{NULL, NULL}
};

static const luaL_Reg kmod_meta[] = {
	{"__close", kmod_l_close},
	{"__gc", kmod_l_close},
	{"__index", NULL},
	{NULL, NULL}
};

static const luaL_Reg funcs[] = {
	{"kmod_new", kmod_l_new},
	{NULL, NULL}
};


void
kmod_open(lua_State *L)
{
	luaL_newmetatable(L, KMOD_T);
	luaL_setfuncs(L, kmod_meta, 0);
	luaL_newlib(L, kmod_methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	luaL_setfuncs(L, funcs, 0);
}
