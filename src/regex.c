/*
** regex.c: PCRE2 (8-bit, no UTF) with string.find's shape. Compiled patterns
** are cached per Lua state in a weak-valued registry table (the GC bounds it);
** match data lives in a short-lived userdata so a raising push cannot leak it.
*/
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core.h"

#define CACHE_KEY  "vfioinit.regex.cache"
#define CODE_MT    "vfioinit.Regex"
#define MATCH_MT   "vfioinit.RegexMatch"

typedef struct {
	pcre2_code *code;  /* NULL until compiled */
} Regex;

typedef struct {
	pcre2_match_data *md;  /* NULL once freed */
} RegexMatch;


static int
re_code_gc(lua_State *L)
{
	Regex *r = luaL_checkudata(L, 1, CODE_MT);
	pcre2_code_free(r->code);
	r->code = NULL;
	return 0;
}


static int
re_match_gc(lua_State *L)
{
	RegexMatch *m = luaL_checkudata(L, 1, MATCH_MT);
	pcre2_match_data_free(m->md);
	m->md = NULL;
	return 0;
}


/* The compiled pattern at stack index 1, from the cache or compiled now. */
static pcre2_code *
getcode(lua_State *L, const char *pat, size_t len)
{
	Regex *r;
	int errcode;
	PCRE2_SIZE erroff;

	luaL_getsubtable(L, LUA_REGISTRYINDEX, CACHE_KEY);
	if (lua_getmetatable(L, -1) == 0) {  /* first use: make values weak */
		lua_createtable(L, 0, 1);
		lua_pushliteral(L, "v");
		lua_setfield(L, -2, "__mode");
		lua_setmetatable(L, -2);
	} else {
		lua_pop(L, 1);
	}
	lua_pushvalue(L, 1);
	if (lua_rawget(L, -2) == LUA_TUSERDATA) {
		r = lua_touserdata(L, -1);
		lua_rotate(L, -2, 1);
		lua_pop(L, 1);  /* leaves the userdata, keeping it alive for this call */
		return r->code;
	}
	lua_pop(L, 1);
	/* The userdata exists before the code, so an error cannot leak it. */
	r = lua_newuserdatauv(L, sizeof *r, 0);
	r->code = NULL;
	if (luaL_newmetatable(L, CODE_MT)) {
		lua_pushcfunction(L, re_code_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	r->code = pcre2_compile((PCRE2_SPTR)pat, len, 0, &errcode, &erroff, NULL);
	if (r->code == NULL) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(errcode, msg, sizeof msg);
		luaL_error(L, "bad pattern '%s': %s at offset %d", pat, (const char *)msg, (int)erroff);
	}
	lua_pushvalue(L, 1);
	lua_pushvalue(L, -2);
	lua_rawset(L, -4);
	lua_rotate(L, -2, 1);
	lua_pop(L, 1);
	return r->code;
}


/***
Find a PCRE2 pattern in subject, like string.find.
@function re_find
@tparam string pattern
@tparam string subject
@tparam[opt=1] int init start position (negative counts from the end)
@treturn[1] int start (1-based)
@treturn[1] int end (inclusive)
@treturn[1] string|false ... captures (false for a group that did not take part)
@return[2] nil no match
*/
static int
re_re_find(lua_State *L)
{
	size_t plen, slen;
	const char *pat = luaL_checklstring(L, 1, &plen);
	const char *subj = luaL_checklstring(L, 2, &slen);
	lua_Integer init = luaL_optinteger(L, 3, 1);
	pcre2_code *code;
	RegexMatch *m;
	PCRE2_SIZE *ov;
	uint32_t ncap, i;
	int rc;

	if (init < 0)
		init = (lua_Integer)slen + init + 1;
	if (init < 1)
		init = 1;
	if (init > (lua_Integer)slen + 1) {
		luaL_pushfail(L);
		return 1;
	}
	code = getcode(L, pat, plen);
	pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &ncap);
	luaL_checkstack(L, (int)ncap + 3, "too many captures");
	m = lua_newuserdatauv(L, sizeof *m, 0);
	m->md = NULL;
	if (luaL_newmetatable(L, MATCH_MT)) {
		lua_pushcfunction(L, re_match_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	if ((m->md = pcre2_match_data_create_from_pattern(code, NULL)) == NULL)
		return luaL_error(L, "re_find: out of memory");
	rc = pcre2_match(code, (PCRE2_SPTR)subj, slen, (PCRE2_SIZE)(init - 1), 0, m->md, NULL);
	if (rc == PCRE2_ERROR_NOMATCH) {
		pcre2_match_data_free(m->md);
		m->md = NULL;
		luaL_pushfail(L);
		return 1;
	}
	if (rc < 0) {
		PCRE2_UCHAR msg[256];
		pcre2_match_data_free(m->md);
		m->md = NULL;
		pcre2_get_error_message(rc, msg, sizeof msg);
		return luaL_error(L, "re_find '%s': %s", pat, (const char *)msg);
	}
	ov = pcre2_get_ovector_pointer(m->md);
	lua_pushinteger(L, (lua_Integer)ov[0] + 1);
	lua_pushinteger(L, (lua_Integer)ov[1]);
	for (i = 1; i <= ncap; i++) {
		if (ov[2 * i] == PCRE2_UNSET)
			lua_pushboolean(L, 0);
		else
			lua_pushlstring(L, subj + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
	}
	pcre2_match_data_free(m->md);
	m->md = NULL;
	return 2 + (int)ncap;
}


static const luaL_Reg funcs[] = {
	{"re_find", re_re_find},
	{NULL, NULL}
};


void
regex_open(lua_State *L)
{
	luaL_setfuncs(L, funcs, 0);
}
