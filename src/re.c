/*
** core.re: PCRE2 patterns for `--match` (lua/vfioinit/bind/init.lua).
**
**   local rx, msg, offset = core.re.compile(pattern)   -- nil, pcre2 message, offset (0-based)
**   local first, last = rx:find(subject)                -- 1-based inclusive, or nil
**
** A pattern is compiled once and matched against every device's description, so
** the compiled code lives in a userdata (freed by __gc/__close). Byte mode (no
** PCRE2_UTF): pci.ids names are matched as bytes, so a file with a stray non-UTF-8
** byte cannot make a match fail with a UTF error.
**
** A module of its own, vfioinit.core.re (src/core.c loads it on first use of core.re):
** only --match needs libpcre2.
*/
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core.h"

#define RE_CLASS "vfioinit.Regex"

typedef struct { pcre2_code *code; } Regex;

/* core.re.compile(pattern) -> regex | nil, message, offset */
static int
re_compile(lua_State *L)
{
	size_t len;
	const char *pat = luaL_checklstring(L, 1, &len);
	int errcode;
	PCRE2_SIZE erroff;
	Regex *rx = lua_newuserdatauv(L, sizeof *rx, 0);
	rx->code = NULL;
	luaL_setmetatable(L, RE_CLASS);
	rx->code = pcre2_compile((PCRE2_SPTR)pat, len, 0, &errcode, &erroff, NULL);
	if (rx->code == NULL) {
		PCRE2_UCHAR buf[256];
		if (pcre2_get_error_message(errcode, buf, sizeof buf) < 0)
			snprintf((char *)buf, sizeof buf, "PCRE2 error %d", errcode);
		lua_pushnil(L);
		lua_pushstring(L, (const char *)buf);
		lua_pushinteger(L, (lua_Integer)erroff);
		return 3;
	}
	return 1;
}

/* rx:find(subject) -> first, last (1-based, inclusive) | nil */
static int
re_find(lua_State *L)
{
	Regex *rx = luaL_checkudata(L, 1, RE_CLASS);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	if (rx->code == NULL) return luaL_error(L, "regex is closed");
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(rx->code, NULL);
	if (md == NULL) return luaL_error(L, "out of memory");
	int rc = pcre2_match(rx->code, (PCRE2_SPTR)s, len, 0, 0, md, NULL);
	if (rc < 0) {
		pcre2_match_data_free(md);
		if (rc == PCRE2_ERROR_NOMATCH) { lua_pushnil(L); return 1; }
		PCRE2_UCHAR buf[256];
		if (pcre2_get_error_message(rc, buf, sizeof buf) < 0)
			snprintf((char *)buf, sizeof buf, "PCRE2 error %d", rc);
		lua_pushnil(L);
		lua_pushstring(L, (const char *)buf);
		return 2;
	}
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
	lua_pushinteger(L, (lua_Integer)ov[0] + 1);
	lua_pushinteger(L, (lua_Integer)ov[1]);
	pcre2_match_data_free(md);
	return 2;
}

static int
re_gc(lua_State *L)
{
	Regex *rx = luaL_checkudata(L, 1, RE_CLASS);
	if (rx->code) { pcre2_code_free(rx->code); rx->code = NULL; }
	return 0;
}

void
re_open(lua_State *L)
{
	static const luaL_Reg methods[] = { { "find", re_find }, { "close", re_gc }, { NULL, NULL } };
	vfi_class(L, RE_CLASS, re_gc, methods);
	vfi_export(L, "re", "compile", re_compile);
}


__attribute__((visibility("default"))) int
luaopen_vfioinit_core_re(lua_State *L)
{
	return vfi_open_part(L, "re", re_open);
}
