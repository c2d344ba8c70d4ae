/*
** compat.h: the Lua 5.4 C API subset the sources in src/ uses, provided on 5.3, 5.2,
** 5.1 and LuaJIT 2.1 (which speaks the 5.1 API plus a few 5.2 additions).
** On 5.4 this header defines nothing: every block is guarded by
** LUA_VERSION_NUM, so the 5.4 build compiles exactly the code it always did.
** Older versions get the missing names as macros onto static inline vfi_*
** helpers. Semantics that cannot be emulated and are not needed:
**   - lua_toclose is a no-op (every to-be-closed value also has __gc);
**   - lua_newuserdatauv ignores the user-value count (the core uses 0);
**   - lua_Integer is ptrdiff_t below 5.3 and travels as a double.
*/
#ifndef VFIOINIT_COMPAT_H
#define VFIOINIT_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 504
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* 5.4: user values, to-be-closed slots, fail, buffsub. */
#define lua_newuserdatauv(L, sz, nuv)	((void)(nuv), lua_newuserdata(L, sz))
#define lua_toclose(L, idx)		((void)(L), (void)(idx))
#ifndef luaL_pushfail
#define luaL_pushfail(L)		lua_pushnil(L)
#endif
#if LUA_VERSION_NUM >= 502
#ifndef luaL_buffsub
#define luaL_buffsub(B, s)		((B)->n -= (s))
#endif
#ifndef luaL_bufflen
#define luaL_bufflen(B)			((B)->n)
#endif
#endif
#endif /* < 504 */

#if LUA_VERSION_NUM < 503
/* 5.3: integers, lua_rotate, typed lua_rawget/lua_rawgeti, "%I". */
#ifndef LUA_MAXINTEGER
#define LUA_MAXINTEGER	PTRDIFF_MAX
#define LUA_MININTEGER	PTRDIFF_MIN
#endif

static inline int
vfi_rawget(lua_State *L, int idx)
{
	lua_rawget(L, idx);
	return lua_type(L, -1);
}
static inline int
vfi_rawgeti(lua_State *L, int idx, lua_Integer n)
{
	lua_rawgeti(L, idx, (int)n);
	return lua_type(L, -1);
}
static inline int
vfi_getfield(lua_State *L, int idx, const char *k)
{
	lua_getfield(L, idx, k);
	return lua_type(L, -1);
}
#undef lua_rawget
#undef lua_rawgeti
#undef lua_getfield
#define lua_rawget(L, i)	vfi_rawget(L, i)
#define lua_rawgeti(L, i, n)	vfi_rawgeti(L, i, n)
#define lua_getfield(L, i, k)	vfi_getfield(L, i, k)

static inline int
vfi_absindex(lua_State *L, int idx)
{
	return (idx > 0 || idx <= LUA_REGISTRYINDEX) ? idx : lua_gettop(L) + idx + 1;
}

static inline void
vfi_rotate(lua_State *L, int idx, int n)
{
	idx = vfi_absindex(L, idx);
	for (; n > 0; n--)
		lua_insert(L, idx);
	for (; n < 0; n++) {
		lua_pushvalue(L, idx);
		lua_remove(L, idx);
	}
}
#define lua_rotate(L, i, n)	vfi_rotate(L, i, n)

/*
** lua_pushfstring with the 5.3 conversions the core uses: %s %d %c %f %p
** %% and %I (lua_Integer). Pieces are pushed and concatenated.
*/
static inline const char *
vfi_pushvfstring(lua_State *L, const char *fmt, va_list ap)
{
	int n = 0;
	const char *e;
	char buf[64];
	while ((e = strchr(fmt, '%')) != NULL) {
		luaL_checkstack(L, 2, "format");
		lua_pushlstring(L, fmt, (size_t)(e - fmt));
		n++;
		switch (e[1]) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			lua_pushstring(L, s ? s : "(null)");
			break;
		}
		case 'd':
			snprintf(buf, sizeof buf, "%d", va_arg(ap, int));
			lua_pushstring(L, buf);
			break;
		case 'c':
			buf[0] = (char)va_arg(ap, int);
			lua_pushlstring(L, buf, 1);
			break;
		case 'f':
			snprintf(buf, sizeof buf, "%.14g", (double)va_arg(ap, lua_Number));
			lua_pushstring(L, buf);
			break;
		case 'p':
			snprintf(buf, sizeof buf, "%p", va_arg(ap, void *));
			lua_pushstring(L, buf);
			break;
		case 'I':
			snprintf(buf, sizeof buf, "%td", (ptrdiff_t)va_arg(ap, lua_Integer));
			lua_pushstring(L, buf);
			break;
		case '%':
			lua_pushliteral(L, "%");
			break;
		default:
			luaL_error(L, "invalid conversion '%%%c' to lua_pushfstring", e[1]);
		}
		n++;
		fmt = e + 2;
	}
	lua_pushstring(L, fmt);
	lua_concat(L, n + 1);
	return lua_tostring(L, -1);
}
static inline const char *
vfi_pushfstring(lua_State *L, const char *fmt, ...)
{
	const char *s;
	va_list ap;
	va_start(ap, fmt);
	s = vfi_pushvfstring(L, fmt, ap);
	va_end(ap);
	return s;
}
#undef lua_pushfstring
#undef lua_pushvfstring
#define lua_pushfstring		vfi_pushfstring
#define lua_pushvfstring	vfi_pushvfstring
#endif /* < 503 */

#if LUA_VERSION_NUM < 502
/* 5.2: lengths, setfuncs/newlib, setmetatable, getsubtable, LUA_OK, buffers. */
#ifndef LUA_OK
#define LUA_OK 0
#endif
#define lua_absindex(L, i)	vfi_absindex(L, i)
#define lua_rawlen(L, i)	lua_objlen(L, i)
#define luaL_len(L, i)		((lua_Integer)lua_objlen(L, i))

static inline void
vfi_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
	luaL_checkstack(L, nup, "too many upvalues");
	for (; l->name != NULL; l++) {
		int i;
		for (i = 0; i < nup; i++)
			lua_pushvalue(L, -nup);
		lua_pushcclosure(L, l->func, nup);
		lua_setfield(L, -(nup + 2), l->name);
	}
	lua_pop(L, nup);
}
static inline void
vfi_setmetatable(lua_State *L, const char *tname)
{
	luaL_getmetatable(L, tname);
	lua_setmetatable(L, -2);
}
static inline int
vfi_getsubtable(lua_State *L, int idx, const char *fname)
{
	if (lua_getfield(L, idx, fname) == LUA_TTABLE)
		return 1;
	lua_pop(L, 1);
	idx = vfi_absindex(L, idx);
	lua_newtable(L);
	lua_pushvalue(L, -1);
	lua_setfield(L, idx, fname);
	return 0;
}
#undef luaL_setfuncs
#undef luaL_setmetatable
#undef luaL_newlib
#define luaL_setfuncs(L, l, n)		vfi_setfuncs(L, l, n)
#define luaL_setmetatable(L, t)		vfi_setmetatable(L, t)
#define luaL_getsubtable(L, i, f)	vfi_getsubtable(L, i, f)
#define luaL_newlib(L, l)		(lua_newtable(L), vfi_setfuncs(L, l, 0))

/*
** 5.1 buffers hold LUAL_BUFFERSIZE bytes in the struct and spill earlier
** chunks onto the stack (B->lvl entries at the top), so a buffer's length is
** the spilled strings plus the current chunk, and shrinking across a spill
** collapses the buffer into one string first.
*/
static inline size_t
vfi_bufflen(luaL_Buffer *B)
{
	size_t n = (size_t)(B->p - B->buffer);
	int i;
	for (i = 1; i <= B->lvl; i++)
		n += lua_objlen(B->L, -i);
	return n;
}
static inline void
vfi_buffsub(luaL_Buffer *B, size_t s)
{
	lua_State *L = B->L;
	size_t cur = (size_t)(B->p - B->buffer), keep;
	const char *str;
	if (s <= cur) {
		B->p -= s;
		return;
	}
	keep = vfi_bufflen(B) - s;
	luaL_pushresult(B);
	str = lua_tostring(L, -1);
	lua_pushlstring(L, str, keep);
	lua_remove(L, -2);
	luaL_buffinit(L, B);
	luaL_addvalue(B);
}
#define luaL_bufflen(B)		vfi_bufflen(B)
#define luaL_buffsub(B, s)	vfi_buffsub(B, s)
/* luaL_prepbuffer gives LUAL_BUFFERSIZE bytes: callers read VFI_BUFFCHUNK(n). */
#define luaL_prepbuffsize(B, sz)	((void)(sz), luaL_prepbuffer(B))
#define VFI_BUFFCHUNK(n)	((n) < LUAL_BUFFERSIZE ? (n) : LUAL_BUFFERSIZE)
#endif /* < 502 */

#ifndef VFI_BUFFCHUNK
#define VFI_BUFFCHUNK(n)	(n)
#endif

#endif
