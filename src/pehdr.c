/*
** pehdr.c: the headers of a PE/COFF image, read once for every reader of them:
** the section table (src/pe.c: core.image.sections, core.image.section) and the
** optional header's fields the Authenticode digest skips or stops at
** (src/sig.c: core.sig). The layout is the one in Microsoft's "PE Format" (DOS
** header -> e_lfanew -> "PE\0\0" + COFF header -> optional header -> 40-byte
** section headers); every offset and size read from the file is checked against
** the file's size before use. Linked into vfioinit.core and vfioinit.core.sig.
*/
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define PE_SECTION_HDR 40
#define PE_COFF_HDR 24	/* "PE\0\0" + the 20-byte COFF file header */
#define PE_OPT_READ 152	/* PE32+ up to and including the data directory's 5th entry (112 + 5 * 8) */
#define PE_DIR_CERT 4	/* IMAGE_DIRECTORY_ENTRY_SECURITY */


uint32_t
vfi_rd32(const unsigned char *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}


static uint16_t
rd16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}


static void
pe_close(struct vfi_pe *f)
{
	if (f->fd >= 0) {
		close(f->fd);
		f->fd = -1;
	}
}


static int
pe_gc(lua_State *L)
{
	pe_close(luaL_checkudata(L, 1, VFI_PE_FILE));
	return 0;
}


void
vfi_pe_close(struct vfi_pe *f)
{
	pe_close(f);
}


static int
pe_fail(lua_State *L, const char *path, const char *why)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: not a PE image (%s)", path, why);
	return 2;
}


int
vfi_pe_pread(struct vfi_pe *f, void *buf, size_t n, uint64_t off)
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
pe_section_hdr(struct vfi_pe *f, const unsigned char *h, int i)
{
	struct vfi_pe_section *s = &f->sec[i];
	uint32_t vsize = vfi_rd32(h + 8), rva = vfi_rd32(h + 12), rawsize = vfi_rd32(h + 16), rawptr = vfi_rd32(h + 20);
	memcpy(s->name, h, 8);
	s->name[8] = '\0';
	/* objcopy pads the raw data to the file alignment: the data is the smaller size */
	s->size = vsize != 0 && vsize < rawsize ? vsize : rawsize;
	s->rawsize = rawsize;
	s->offset = rawptr;
	s->rva = rva;
	if (s->size != 0 && (s->offset > f->size || s->size > f->size - s->offset))
		return "a section's data lies past the end of the file";
	return NULL;
}


/*
** The optional header's checksum, SizeOfHeaders and certificate-table entry, or
** f->opt_why saying why there are none: the section readers do not need them.
*/
static void
pe_optional(struct vfi_pe *f, uint64_t opt, unsigned optsize)
{
	unsigned char o[PE_OPT_READ];
	unsigned nrva_at, dir_at;
	memset(o, 0, sizeof o);
	f->opt_why = "optional header too short for a certificate table entry";
	if (optsize < 2 || vfi_pe_pread(f, o, optsize < sizeof o ? optsize : sizeof o, opt) != 0)
		return;
	if (rd16(o) == 0x10b) {
		nrva_at = 92;
		dir_at = 96;
		f->image_base = optsize >= 32 ? vfi_rd32(o + 28) : 0;
	} else if (rd16(o) == 0x20b) {
		nrva_at = 108;
		dir_at = 112;
		f->image_base = optsize >= 32 ? vfi_rd32(o + 24) | (uint64_t)vfi_rd32(o + 28) << 32 : 0;
	} else {
		f->opt_why = "optional header magic is neither PE32 nor PE32+";
		return;
	}
	dir_at += PE_DIR_CERT * 8;
	if (optsize < dir_at + 8)
		return;
	if (vfi_rd32(o + nrva_at) <= PE_DIR_CERT) {
		f->opt_why = "the data directory has no certificate table entry";
		return;
	}
	f->cksum_off = opt + 64;
	f->certdir_off = opt + dir_at;
	f->hdr_size = vfi_rd32(o + 60);
	f->cert_off = vfi_rd32(o + dir_at);
	f->cert_size = vfi_rd32(o + dir_at + 4);
	f->opt_why = f->hdr_size < f->certdir_off + 8 || f->hdr_size > f->size
	    ? "SizeOfHeaders does not cover the optional header or lies past the end of the file" : NULL;
}


/* Parse the headers and the section table into f. 0, or pushes nil, msg (2) / nil, msg, errno (3). */
static int
pe_parse(lua_State *L, const char *path, struct vfi_pe *f)
{
	unsigned char dos[64], coff[PE_COFF_HDR], h[PE_SECTION_HDR];
	int err;
	if (f->size < sizeof dos || vfi_pe_pread(f, dos, sizeof dos, 0) != 0 || dos[0] != 'M' || dos[1] != 'Z')
		return pe_fail(L, path, "no MZ header");
	uint64_t pe = vfi_rd32(dos + 0x3c);
	if (pe > f->size || f->size - pe < PE_COFF_HDR || vfi_pe_pread(f, coff, sizeof coff, pe) != 0
	    || memcmp(coff, "PE\0\0", 4) != 0)
		return pe_fail(L, path, "no PE signature at e_lfanew");
	f->n = rd16(coff + 6);
	uint64_t table = pe + PE_COFF_HDR + rd16(coff + 20);
	if (f->n > VFI_PE_MAX_SECTIONS)
		return pe_fail(L, path, "more than 96 sections");
	if (table > f->size || (f->size - table) / PE_SECTION_HDR < (uint64_t)f->n)
		return pe_fail(L, path, "section table past the end of the file");
	for (int i = 0; i < f->n; i++) {
		const char *why;
		if ((err = vfi_pe_pread(f, h, sizeof h, table + (uint64_t)i * PE_SECTION_HDR)) != 0)
			return vfi_push_errno(L, path, err);
		if ((why = pe_section_hdr(f, h, i)) != NULL)
			return pe_fail(L, path, why);
	}
	pe_optional(f, pe + PE_COFF_HDR, rd16(coff + 20));
	return 0;
}


int
vfi_pe_load(lua_State *L, const char *root, const char *path, struct vfi_pe **out)
{
	struct stat st;
	struct vfi_pe *f = lua_newuserdatauv(L, sizeof(*f), 0);
	memset(f, 0, sizeof *f);
	f->fd = -1;
	vfi_class(L, VFI_PE_FILE, pe_gc, NULL);
	luaL_setmetatable(L, VFI_PE_FILE);
	*out = f;
	if (vfi_open_regular(L, root, path, &f->fd, &st) != 0)
		return 3;
	f->size = (uint64_t)st.st_size;
	return pe_parse(L, path, f);
}
