/*
** fuzz/lua_parser.h: one harness for the parsers written in Lua. A file that
** #defines FUZZ_MODULE ("vfioinit.state") and FUZZ_FUNC ("parse_manifest") and
** includes this header becomes a libFuzzer target calling
**   require(FUZZ_MODULE)[FUZZ_FUNC](input)
** for every input. The parsers promise to be pure and never to raise, so a crash is:
** a raised Lua error, or a result that is neither a table nor (nil, message); with
** FUZZ_ERR_LINE also a message not starting with "LINE: ". Plus the usual ASan/UBSan
** findings in the C core (every src/ C file is compiled in).
**
** Unlike harness.h the lua_State is made once (LLVMFuzzerInitialize): loading the
** modules per input would cost far more than the parse. Lua's own GC keeps memory
** bounded; each input leaves an empty stack and we add a GC step every 256 inputs.
** The GC frees later than the input that allocated, so libFuzzer's per-input leak
** check would fire (and rerun + scan the heap) all the time: it is turned off
** (-detect_leaks=0 appended to argv) -- the parsers are pure Lua, nothing C to leak.
**
** Lua's heap comes from glibc directly (__libc_malloc & co.), not through ASan's
** malloc: the VM is not instrumented, so ASan could check nothing in that memory,
** and its allocator (stack traces, quarantine) was 80% of the run time. Memory the
** C core mallocs itself is still ASan's.
**
** Coverage: liblua is not instrumented, so libFuzzer would see no difference between
** inputs. A Lua line hook feeds it instead: each (previous line, line) pair of the Lua
** code run bumps a counter in __libfuzzer_extra_counters, AFL-style edges over
** source lines.
** VFIOINIT_LUA_DIR (tools/fuzz passes the repository's lua/) is where require looks;
** vfioinit.core is the statically linked luaopen_vfioinit_core, not a .so.
** FUZZ_SELFTEST swaps the parser for one that raises: tools/fuzz --selftest checks
** such a build is reported as a crash.
*/
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#ifndef VFIOINIT_LUA_DIR
#error "build with -DVFIOINIT_LUA_DIR=\"/path/to/repo/lua\" (tools/fuzz does)"
#endif

int luaopen_vfioinit_core(lua_State *L);

void *__libc_realloc(void *ptr, size_t size);
void __libc_free(void *ptr);

static lua_State *fuzz_L;
static int fuzz_fn;  /* registry reference to the parser */

#define FUZZ_COV_SIZE (1u << 13)  /* libFuzzer scans and clears it every run: keep it small */
__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t fuzz_cov[FUZZ_COV_SIZE];
static uintptr_t fuzz_prev;  /* the previous line's hash >> 1, reset per input */

__attribute__((no_sanitize("coverage")))  /* the hook's own branches are no signal */
static void
fuzz_line_hook(lua_State *L, lua_Debug *ar)
{
	/* The line number alone, no lua_getinfo(L, "S") (which formats the source name on
	** every call and halved the speed): a parser's lines all live in its own module,
	** so lines of other files seldom run, and a collision only merges two counters. */
	uintptr_t here = ((uintptr_t)ar->currentline * 2654435761u >> 8) & (FUZZ_COV_SIZE - 1);
	uint8_t *c = &fuzz_cov[(here ^ fuzz_prev) & (FUZZ_COV_SIZE - 1)];
	(void)L;
	if (*c < 255)
		(*c)++;
	fuzz_prev = here >> 1;
}


/* lua_Alloc on glibc's own functions (see the top of the file). */
static void *
fuzz_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	(void)osize;
	if (nsize == 0) {
		__libc_free(ptr);
		return NULL;
	}
	return __libc_realloc(ptr, nsize);
}


/* Append -detect_leaks=0 to libFuzzer's flags (it parses them after this returns). */
static void
fuzz_no_leak_check(int *argc, char ***argv)
{
	char **v = calloc((size_t)*argc + 2, sizeof *v);
	if (v == NULL)
		abort();
	memcpy(v, *argv, (size_t)*argc * sizeof *v);
	v[(*argc)++] = "-detect_leaks=0";
	*argv = v;  /* lives as long as the process */
}

static void
fuzz_die(const char *what, lua_State *L)
{
	const char *msg = lua_tostring(L, -1);
	fprintf(stderr, "vfioinit fuzz: %s: %s\n", what, msg ? msg : "(non-string error)");
	abort();
}


/* Push FUZZ_MODULE's FUZZ_FUNC (or, for the selftest, a function that raises). */
static void
fuzz_push_parser(lua_State *L)
{
#ifdef FUZZ_SELFTEST
	if (luaL_dostring(L, "return function() error('FUZZ_SELFTEST: this parser raises') end") != LUA_OK)
		fuzz_die("selftest", L);
#else
	lua_getglobal(L, "require");
	lua_pushstring(L, FUZZ_MODULE);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK)
		fuzz_die("require " FUZZ_MODULE, L);
	if (lua_getfield(L, -1, FUZZ_FUNC) != LUA_TFUNCTION) {
		fprintf(stderr, "vfioinit fuzz: %s.%s is not a function\n", FUZZ_MODULE, FUZZ_FUNC);
		abort();
	}
#endif
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lua_State *L = lua_newstate(fuzz_lua_alloc, NULL);
	if (L == NULL)
		abort();
	fuzz_no_leak_check(argc, argv);
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_pushstring(L, VFIOINIT_LUA_DIR "/?.lua;" VFIOINIT_LUA_DIR "/?/init.lua");
	lua_setfield(L, -2, "path");
	lua_pushstring(L, "");  /* no .so from anywhere: the core is the one compiled in */
	lua_setfield(L, -2, "cpath");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_vfioinit_core);
	lua_setfield(L, -2, "vfioinit.core");
	lua_settop(L, 0);
	fuzz_push_parser(L);
	fuzz_fn = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_settop(L, 0);
	lua_sethook(L, fuzz_line_hook, LUA_MASKLINE, 0);  /* after loading: parse lines only */
	fuzz_L = L;
	return 0;
}


/* The result contract: entries (a table), or nil and a non-empty message. */
static int
fuzz_result_ok(lua_State *L)
{
	size_t len = 0;
	const char *msg;
	if (lua_type(L, 1) == LUA_TTABLE)
		return 1;
	if (lua_type(L, 1) != LUA_TNIL || lua_type(L, 2) != LUA_TSTRING)
		return 0;
	msg = lua_tolstring(L, 2, &len);
	if (len == 0)
		return 0;
#ifdef FUZZ_ERR_LINE
	{
		size_t i = 0;
		while (i < len && msg[i] >= '0' && msg[i] <= '9')
			i++;
		if (i == 0 || i + 1 >= len || msg[i] != ':' || msg[i + 1] != ' ')
			return 0;
	}
#endif
	(void)msg;
	return 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned n;
	lua_State *L = fuzz_L;
	fuzz_prev = 0;
	lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_fn);
	lua_pushlstring(L, (const char *)data, size);
	if (lua_pcall(L, 1, 2, 0) != LUA_OK)
		fuzz_die("Lua error", L);
	if (!fuzz_result_ok(L)) {
		fprintf(stderr, "vfioinit fuzz: %s.%s broke its result contract: returned %s, %s\n",
			FUZZ_MODULE, FUZZ_FUNC, luaL_typename(L, 1), luaL_typename(L, 2));
		abort();
	}
	lua_settop(L, 0);
	if (++n % 256 == 0)
		lua_gc(L, LUA_GCSTEP, 0);
	return 0;
}
