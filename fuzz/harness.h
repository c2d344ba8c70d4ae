/*
** fuzz/harness.h: the part every libFuzzer harness shares. Each input gets a
** fresh lua_State holding the real vfioinit.core table (luaopen_vfioinit_core,
** every src/ C file compiled into the fuzzer), closed after the call: every byte Lua
** allocated is freed again, so libFuzzer's per-input leak check only reports
** memory the C core lost. A harness defines fuzz_call(L, data, size): push the
** core function and its arguments, return the argument count. The call runs
** protected: "not enough memory" is not a crash; any other Lua error is (a
** raise means misuse, and the harness passes valid arguments), as are memory
** errors, UB, aborts, leaks and hangs.
*/
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include <lualib.h>

int luaopen_vfioinit_core(lua_State *L);
int luaopen_vfioinit_core_image(lua_State *L);
int luaopen_vfioinit_core_archive(lua_State *L);
int luaopen_vfioinit_core_sig(lua_State *L);

static int fuzz_call(lua_State *L, const uint8_t *data, size_t size);


/* Push core[concern][name] (a function) on the stack; the core table is at index 1. */
static void
fuzz_push_fn(lua_State *L, const char *concern, const char *name)
{
	if (lua_getfield(L, 1, concern) != LUA_TTABLE || lua_getfield(L, -1, name) != LUA_TFUNCTION) {
		fprintf(stderr, "vfioinit.core.%s.%s is not a function\n", concern, name);
		abort();
	}
	lua_remove(L, -2);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lua_State *L = luaL_newstate();
	int nargs;
	if (L == NULL)
		abort();
	/* core loads core.image.list and core.sig on first use through require: the parts are
	   compiled in, so package.preload hands them over */
	luaL_requiref(L, "_G", luaopen_base, 0);
	luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 0);
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_vfioinit_core_image);
	lua_setfield(L, -2, "vfioinit.core.image");
	lua_pushcfunction(L, luaopen_vfioinit_core_archive);
	lua_setfield(L, -2, "vfioinit.core.archive");
	lua_pushcfunction(L, luaopen_vfioinit_core_sig);
	lua_setfield(L, -2, "vfioinit.core.sig");
	lua_pop(L, 3);
	luaL_requiref(L, "vfioinit.core", luaopen_vfioinit_core, 0);  /* 1 */
	nargs = fuzz_call(L, data, size);
	if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK) {
		const char *msg = lua_tostring(L, -1);
		if (msg == NULL || strstr(msg, "not enough memory") == NULL) {
			fprintf(stderr, "vfioinit fuzz: Lua error: %s\n", msg ? msg : "(non-string)");
			abort();
		}
	}
	lua_close(L);
	return 0;
}
