/*
** pe.c: the section table of a PE/COFF image (a unified kernel image: the
** systemd/objcopy EFI stub with .linux, .initrd, .cmdline, .uname, .osrel
** ... added as sections), so verify can read the initramfs and command line
** a UKI carries (core.image.sections, core.image.section). The layout is the
** one in Microsoft's "PE Format" (DOS header -> e_lfanew -> "PE\0\0" + COFF
** header -> optional header -> 40-byte section headers); every offset and
** size read from the file is checked against the file's size before use.
** The file is opened inside root through fs.c (a regular file only).
*/
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define PE_FILE "vfioinit.PeFile"
#define PE_MAX_SECTIONS 96	/* the Windows loader's limit; EFI firmware uses the same table */
#define PE_SECTION_HDR 40
#define PE_COFF_HDR 24	/* "PE\0\0" + the 20-byte COFF file header */
#define PE_SECTION_MAX_DEFAULT (1 << 20)	/* core.image.section's default limit */

struct pe_section {
	char name[9];	/* NUL-padded in the file; a "/N" long name is returned as stored */
	uint64_t offset, size;
};

/* The open file; a userdata so a Lua error (out of memory) still closes it. */
struct pe_file {
	int fd;
	uint64_t size;
	int n;
	struct pe_section sec[PE_MAX_SECTIONS];
};


static void
pe_close(struct pe_file *f)
{
	if (f->fd >= 0) {
		close(f->fd);
		f->fd = -1;
	}
}


static int
pe_gc(lua_State *L)
{
	pe_close(luaL_checkudata(L, 1, PE_FILE));
	return 0;
}


static uint32_t
rd32(const unsigned char *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}


static uint16_t
rd16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}


static int
pe_fail(lua_State *L, const char *path, const char *why)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: not a PE image (%s)", path, why);
	return 2;
}


/* Read exactly n bytes at off. 0, or errno (EIO for a short read: the file shrank). */
static int
pe_pread(struct pe_file *f, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(f->fd, (char *)buf + got, n - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return EIO;
		got += (size_t)r;
	}
	return 0;
}


/* One 40-byte section header into f->sec[i]; NULL or why it is wrong. */
static const char *
pe_section_hdr(struct pe_file *f, const unsigned char *h, int i)
{
	struct pe_section *s = &f->sec[i];
	uint32_t vsize = rd32(h + 8), rawsize = rd32(h + 16), rawptr = rd32(h + 20);
	memcpy(s->name, h, 8);
	s->name[8] = '\0';
	/* objcopy pads the raw data to the file alignment: the data is the smaller size */
	s->size = vsize != 0 && vsize < rawsize ? vsize : rawsize;
	s->offset = rawptr;
	if (s->size != 0 && (s->offset > f->size || s->size > f->size - s->offset))
		return "a section's data lies past the end of the file";
	return NULL;
}


/* Parse the headers and the section table into f. 0, or pushes nil, msg (2) / nil, msg, errno (3). */
static int
pe_parse(lua_State *L, const char *path, struct pe_file *f)
{
	unsigned char dos[64], coff[PE_COFF_HDR], h[PE_SECTION_HDR];
	int err;
	if (f->size < sizeof dos || pe_pread(f, dos, sizeof dos, 0) != 0 || dos[0] != 'M' || dos[1] != 'Z')
		return pe_fail(L, path, "no MZ header");
	uint64_t pe = rd32(dos + 0x3c);
	if (pe > f->size || f->size - pe < PE_COFF_HDR || pe_pread(f, coff, sizeof coff, pe) != 0
	    || memcmp(coff, "PE\0\0", 4) != 0)
		return pe_fail(L, path, "no PE signature at e_lfanew");
	f->n = rd16(coff + 6);
	uint64_t table = pe + PE_COFF_HDR + rd16(coff + 20);
	if (f->n > PE_MAX_SECTIONS)
		return pe_fail(L, path, "more than 96 sections");
	if (table > f->size || (f->size - table) / PE_SECTION_HDR < (uint64_t)f->n)
		return pe_fail(L, path, "section table past the end of the file");
	for (int i = 0; i < f->n; i++) {
		const char *why;
		if ((err = pe_pread(f, h, sizeof h, table + (uint64_t)i * PE_SECTION_HDR)) != 0)
			return vfi_push_errno(L, path, err);
		if ((why = pe_section_hdr(f, h, i)) != NULL)
			return pe_fail(L, path, why);
	}
	return 0;
}


/* Open path inside root and read its section table into a new userdata (left on the stack). */
static int
pe_load(lua_State *L, const char *root, const char *path, struct pe_file **out)
{
	struct stat st;
	struct pe_file *f = lua_newuserdatauv(L, sizeof(*f), 0);
	f->fd = -1;
	f->n = 0;
	luaL_setmetatable(L, PE_FILE);
	*out = f;
	if (vfi_open_regular(L, root, path, &f->fd, &st) != 0)
		return 3;
	f->size = (uint64_t)st.st_size;
	return pe_parse(L, path, f);
}


/***
The section table of a PE/COFF image (a UKI).
@function sections
@string root host directory the image is in
@string path image file inside root
@treturn[1] table `{ {name=".initrd", offset=file offset, size=bytes}, ... }` in table order
@return[2] nil
@treturn[2] string "path: not a PE image (reason)"
*/
static int
pe_sections(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	struct pe_file *f;
	int nret = pe_load(L, root, path, &f);
	if (nret != 0)
		return nret;
	lua_createtable(L, f->n, 0);
	for (int i = 0; i < f->n; i++) {
		lua_createtable(L, 0, 3);
		lua_pushlstring(L, f->sec[i].name, strnlen(f->sec[i].name, 8));
		lua_setfield(L, -2, "name");
		lua_pushinteger(L, (lua_Integer)f->sec[i].offset);
		lua_setfield(L, -2, "offset");
		lua_pushinteger(L, (lua_Integer)f->sec[i].size);
		lua_setfield(L, -2, "size");
		lua_rawseti(L, -2, i + 1);
	}
	pe_close(f);
	return 1;
}


/* The first section called name, or NULL. */
static const struct pe_section *
pe_find(const struct pe_file *f, const char *name, size_t len)
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
	struct pe_file *f;
	int nret = pe_load(L, root, path, &f), err;
	if (nret != 0)
		return nret;
	const struct pe_section *s = pe_find(f, name, len);
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
	err = pe_pread(f, p, (size_t)s->size, s->offset);
	pe_close(f);
	if (err != 0)
		return vfi_push_errno(L, path, err);
	lua_pushlstring(L, p, (size_t)s->size);
	return 1;
}


void
pe_open(lua_State *L)
{
	vfi_class(L, PE_FILE, pe_gc, NULL);
	vfi_export(L, "image", "sections", pe_sections);
	vfi_export(L, "image", "section", pe_section);
}
