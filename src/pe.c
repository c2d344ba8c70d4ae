/*
** pe.c: the section table of a PE/COFF image (a unified kernel image: the
** systemd/objcopy EFI stub with .linux, .initrd, .cmdline, .uname, .osrel
** ... added as sections), so verify can read the initramfs and command line
** a UKI carries (core.image.sections, core.image.section). The
** headers are read by src/pehdr.c; the file is opened inside root through fs.c
** (a regular file only).
*/
#include <string.h>

#include "core.h"

#define PE_SECTION_MAX_DEFAULT (1 << 20)	/* core.image.section's default limit */

/***
The section table of a PE/COFF image (a UKI).
@function sections
@string root host directory the image is in
@string path image file inside root
@treturn[1] table `{ {name=".initrd", offset=file offset, size=bytes, vma=address}, ... }` in table
order (`vma`: ImageBase + VirtualAddress, the address objdump -h shows and objcopy's
--change-section-vma takes)
@return[2] nil
@treturn[2] string "path: not a PE image (reason)"
*/
static int
pe_sections(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	struct vfi_pe *f;
	int nret = vfi_pe_load(L, root, path, &f);
	if (nret != 0)
		return nret;
	lua_createtable(L, f->n, 0);
	for (int i = 0; i < f->n; i++) {
		lua_createtable(L, 0, 4);
		lua_pushlstring(L, f->sec[i].name, strnlen(f->sec[i].name, 8));
		lua_setfield(L, -2, "name");
		lua_pushinteger(L, (lua_Integer)f->sec[i].offset);
		lua_setfield(L, -2, "offset");
		lua_pushinteger(L, (lua_Integer)f->sec[i].size);
		lua_setfield(L, -2, "size");
		lua_pushinteger(L, (lua_Integer)(f->image_base + f->sec[i].rva));
		lua_setfield(L, -2, "vma");
		lua_rawseti(L, -2, i + 1);
	}
	vfi_pe_close(f);
	return 1;
}


/* The first section called name, or NULL. */
static const struct vfi_pe_section *
pe_find(const struct vfi_pe *f, const char *name, size_t len)
{
	for (int i = 0; i < f->n; i++)
		if (strnlen(f->sec[i].name, 8) == len && memcmp(f->sec[i].name, name, len) == 0)
			return &f->sec[i];
	return NULL;
}


/***
The bytes of one section of a PE/COFF image (`.cmdline`, `.uname`, `.osrel`).
@function section
@string root host directory the image is in
@string path image file inside root
@string name section name, e.g. ".cmdline"
@int[opt=1048576] max refuse a larger section
@treturn[1] string the section's data (VirtualSize bytes: no file-alignment padding)
@return[2] nil
@treturn[2] string "path: no .x section", "path: section .x is N bytes (limit M)" or "path: not a PE image (reason)"
*/
static int
pe_section(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	size_t len;
	const char *name = luaL_checklstring(L, 3, &len);
	lua_Integer max = luaL_optinteger(L, 4, PE_SECTION_MAX_DEFAULT);
	luaL_argcheck(L, max >= 0, 4, "limit must not be negative");
	struct vfi_pe *f;
	int nret = vfi_pe_load(L, root, path, &f), err;
	if (nret != 0)
		return nret;
	const struct vfi_pe_section *s = pe_find(f, name, len);
	if (s == NULL) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: no %s section", path, name);
		return 2;
	}
	if (s->size > (uint64_t)max) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: section %s is %I bytes (limit %I)", path, name, (lua_Integer)s->size, max);
		return 2;
	}
	/* a userdata as the buffer (Lua 5.1/LuaJIT have no luaL_buffinitsize); at most max bytes */
	char *p = lua_newuserdatauv(L, s->size > 0 ? (size_t)s->size : 1, 0);
	err = vfi_pe_pread(f, p, (size_t)s->size, s->offset);
	vfi_pe_close(f);
	if (err != 0)
		return vfi_push_errno(L, path, err);
	lua_pushlstring(L, p, (size_t)s->size);
	return 1;
}


void
pe_open(lua_State *L)
{
	vfi_export(L, "image", "sections", pe_sections);
	vfi_export(L, "image", "section", pe_section);
}
