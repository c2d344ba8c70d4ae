/*
** image.c: an initramfs reader that reads the image the way the kernel
** unpacks it (init/initramfs.c): a sequence of cpio "newc" archives, each
** either stored plainly (early microcode/firmware segments, 4-byte aligned)
** or inside one compressed stream, with zero padding between them.
**
** Plain segments are parsed in place on the mmap'd file.  Compressed ones
** are read with pread in blocks (as bsdtar reads: no page of the mapping is
** faulted in and released again, which in a VM costs a TLB-flush IPI per
** release), decompressed by the decoders of unpack.h (zlib, libzstd, else
** libarchive's filters) and streamed through the same newc parser, so both
** kinds obey one set of rules and names come back exactly as stored (cpio -t,
** hence lsinitramfs, shows the same names, except that it drops a leading "/").  Where a compressed
** stream ends, so the next segment can be found: zstd and xz by walking
** their frame/footer structure here (libarchive refuses trailing bytes
** after them), the others from the decoder's count of consumed input.
** Limits: concatenated streams of one compression (gzip members, zstd
** frames, xz streams) are decoded as one stream, so they make one segment;
** a legacy lz4 stream has no end marker, so it must be the last segment
** (as for the kernel).  Several archives inside one compressed stream are
** all listed, as the kernel unpacks them all.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "unpack.h"

#define IMAGE_READER "vfioinit.ImageReader"
#define NEWC_HDR 110
#define NEWC_NAME_MAX 4096	/* the kernel refuses longer names (PATH_MAX) */
#define TRAILER "TRAILER!!!"
#define LZMA_DICT_MAX (1u << 30)	/* what libarchive allows xz */
#define ARCHIVE_MODULE "vfioinit.core.archive"	/* the decoders of unpack_archive.c */

enum cpio_state {
	ST_HEADER,	/* collecting the 110-byte header */
	ST_NAME,	/* collecting namesize bytes */
	ST_DATA,	/* name padding, data and data padding */
	ST_RESET,	/* after a trailer: zeros until the next header */
};

struct cpio {
	lua_State *L;
	int entries, contents, norm;	/* stack indexes; norm = 0: no want */
	lua_Integer nentries;
	int segment;
	int stop_at_trailer;	/* plain segment: return after the trailer */
	int trailer;	/* a trailer has been read */
	enum cpio_state state;
	uint64_t pos;	/* stream offset of the next byte */
	uint64_t entry_pos;	/* stream offset of the current header */
	unsigned char hdr[NEWC_HDR];
	size_t have;	/* bytes of hdr or name collected */
	char name[NEWC_NAME_MAX + 1];
	size_t namesize;
	uint32_t mode, filesize;
	uint64_t skip;	/* bytes left in ST_DATA: padding + data + padding */
	uint64_t data_first, data_end;	/* stream offsets of the data */
	int is_trailer;
	int want;	/* collect this entry's data */
	char *buf;	/* collected data */
	size_t blen, bcap;
	const char *err;	/* set on failure */
	uint64_t err_pos;
};

/* Everything that must be released even when a Lua error unwinds the stack. */
struct reader {
	int fd;
	unsigned char *map;
	size_t len;	/* end of the bytes read: the file's size, or the window's end */
	size_t maplen;	/* the mapping's length (the whole file) */
	size_t start;	/* first byte read: 0, or the window's offset (a UKI's .initrd) */
	struct unpack_src src;	/* the compressed segment being read (src.fd = fd) */
	const struct unpacker *u;	/* its decoder, d, open */
	void *d;
	struct cpio *cp;
};


static void
reader_free(struct reader *r)
{
	if (r->d != NULL) {
		r->u->close(r->d);
		r->d = NULL;
	}
	if (r->map != NULL) {
		munmap(r->map, r->maplen);
		r->map = NULL;
	}
	free(r->src.buf);
	r->src.buf = NULL;
	if (r->fd >= 0) {
		close(r->fd);
		r->fd = -1;
	}
	if (r->cp != NULL) {
		free(r->cp->buf);
		free(r->cp);
		r->cp = NULL;
	}
}


static int
reader_gc(lua_State *L)
{
	reader_free(luaL_checkudata(L, 1, IMAGE_READER));
	return 0;
}


static int
hex8(const unsigned char *s, uint32_t *out)
{
	uint32_t v = 0;
	for (int i = 0; i < 8; i++) {
		unsigned char c = s[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}


static int
cpio_fail(struct cpio *cp, const char *why, uint64_t pos)
{
	cp->err = why;
	cp->err_pos = pos;
	return -1;
}


static size_t
strip_dot(const char *s, size_t n)
{
	size_t i = 0;
	for (;;) {
		if (i + 1 < n && s[i] == '.' && s[i + 1] == '/')
			i += 2;
		else if (i < n && s[i] == '/')
			i++;
		else
			return i;
	}
}


/* Append the keys in array `list` (+ suffix) to array `dst` (absolute indexes). */
static void
append_keys(lua_State *L, int dst, int list, const char *suffix, size_t slen)
{
	lua_Integer n = luaL_len(L, dst);
	for (lua_Integer i = 1; lua_rawgeti(L, list, i) == LUA_TSTRING; i++) {
		if (slen > 0) {
			lua_pushlstring(L, suffix, slen);
			lua_concat(L, 2);
		}
		lua_rawseti(L, dst, ++n);
	}
	lua_pop(L, 1);
}


/*
** Decide whether the entry just named is wanted; if so leave on the stack an
** array of the keys its contents go under (every want key naming it, so
** "x" and "./x" both get it) and return 1.
*/
static int
cpio_wanted(struct cpio *cp, const char *name, size_t n)
{
	lua_State *L = cp->L;
	size_t s = strip_dot(name, n);
	int found = 0;
	lua_newtable(L);
	int dst = lua_gettop(L);
	lua_pushlstring(L, name + s, n - s);
	if (lua_rawget(L, cp->norm) == LUA_TTABLE) {
		append_keys(L, dst, dst + 1, NULL, 0);
		found = 1;
	}
	lua_pop(L, 1);
	/* "dir/" in want asks for every member directly below dir */
	const char *slash = NULL;
	for (size_t i = s; i < n; i++)
		if (name[i] == '/')
			slash = name + i;
	if (slash != NULL && slash + 1 < name + n) {
		lua_pushlstring(L, name + s, slash + 1 - (name + s));
		if (lua_rawget(L, cp->norm) == LUA_TTABLE) {
			/* a key "d/" names its members as "d/" .. basename */
			append_keys(L, dst, dst + 1, slash + 1, name + n - (slash + 1));
			found = 1;
		}
		lua_pop(L, 1);
	}
	if (!found)
		lua_pop(L, 1);
	return found;
}


static const char *
mode_type(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "file";
	case S_IFDIR: return "dir";
	case S_IFLNK: return "link";
	default: return "other";
	}
}


/* The header and name are complete: record the entry. */
static int
cpio_entry(struct cpio *cp)
{
	lua_State *L = cp->L;
	size_t n = strnlen(cp->name, cp->namesize - 1);
	cp->is_trailer = n == sizeof(TRAILER) - 1 && memcmp(cp->name, TRAILER, n) == 0;
	cp->want = 0;
	if (cp->is_trailer)
		return 0;
	lua_createtable(L, 0, 4);
	lua_pushlstring(L, cp->name, n);
	lua_setfield(L, -2, "name");
	lua_pushstring(L, mode_type(cp->mode));
	lua_setfield(L, -2, "type");
	lua_pushinteger(L, cp->filesize);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, cp->segment);
	lua_setfield(L, -2, "segment");
	lua_rawseti(L, cp->entries, ++cp->nentries);
	if (cp->norm != 0 && cpio_wanted(cp, cp->name, n)) {
		/* the keys stay on the stack until the data is complete */
		cp->want = 1;
		cp->blen = 0;
	}
	return 0;
}


/* Room for n more bytes of wanted data; grown as it arrives, not as claimed. */
static int
cpio_reserve(struct cpio *cp, size_t n)
{
	if (cp->bcap - cp->blen >= n)
		return 0;
	size_t cap = cp->bcap ? cp->bcap : 4096;
	while (cap - cp->blen < n)
		cap *= 2;
	char *nb = realloc(cp->buf, cap);
	if (nb == NULL)
		return cpio_fail(cp, "out of memory for member data", cp->entry_pos);
	cp->buf = nb;
	cp->bcap = cap;
	return 0;
}


static void
cpio_entry_done(struct cpio *cp)
{
	if (cp->want) {
		lua_State *L = cp->L;
		int keys = lua_gettop(L);	/* pushed by cpio_wanted */
		lua_pushlstring(L, cp->buf, cp->blen);
		for (lua_Integer i = 1; lua_rawgeti(L, keys, i) == LUA_TSTRING; i++) {
			lua_pushvalue(L, keys + 1);
			lua_rawset(L, cp->contents);
		}
		lua_settop(L, keys - 1);
		cp->want = 0;
	}
	if (cp->is_trailer) {
		cp->trailer = 1;
		cp->state = ST_RESET;
	} else {
		cp->state = ST_HEADER;
	}
}


static int
cpio_header(struct cpio *cp)
{
	uint32_t f[13];
	const unsigned char *h = cp->hdr;
	if (memcmp(h, "07070", 5) != 0 || (h[5] != '1' && h[5] != '2'))
		return cpio_fail(cp, "bad cpio magic (not newc)", cp->entry_pos);
	for (int i = 0; i < 13; i++)
		if (hex8(h + 6 + 8 * i, &f[i]) != 0)
			return cpio_fail(cp, "bad cpio header (not hex)", cp->entry_pos);
	cp->mode = f[1];
	cp->filesize = f[6];
	cp->namesize = f[11];
	if (cp->namesize == 0)
		return cpio_fail(cp, "bad cpio header (empty name)", cp->entry_pos);
	if (cp->namesize > NEWC_NAME_MAX)
		return cpio_fail(cp, "bad cpio header (name too long)", cp->entry_pos);
	return 0;
}


/*
** Collect header or name bytes into dst until `need` are there: returns the
** bytes taken from p; *complete when dst is full (cp->have starts again at 0).
*/
static size_t
cpio_collect(struct cpio *cp, void *dst, size_t need, const unsigned char *p, size_t len, int *complete)
{
	size_t n = need - cp->have;
	if (n > len)
		n = len;
	memcpy((unsigned char *)dst + cp->have, p, n);
	cp->have += n;
	cp->pos += n;
	*complete = cp->have == need;
	if (*complete)
		cp->have = 0;
	return n;
}


/* The name is complete: record the entry and find its data and padding. */
static int
cpio_named(struct cpio *cp)
{
	cp->name[cp->namesize] = '\0';
	if (cpio_entry(cp) != 0)
		return -1;
	cp->data_first = (cp->pos + 3) & ~(uint64_t)3;
	cp->data_end = cp->data_first + cp->filesize;
	cp->skip = ((cp->data_end + 3) & ~(uint64_t)3) - cp->pos;
	cp->state = ST_DATA;
	return 0;
}


/* Pass over name padding, data and data padding, keeping the data of a wanted entry. */
static ssize_t
cpio_data(struct cpio *cp, const unsigned char *p, size_t len)
{
	size_t n = len < cp->skip ? len : (size_t)cp->skip;
	if (cp->want) {
		/* the part of [pos, pos+n) inside [data_first, data_end) */
		uint64_t a = cp->pos > cp->data_first ? cp->pos : cp->data_first;
		uint64_t b = cp->pos + n < cp->data_end ? cp->pos + n : cp->data_end;
		if (a < b) {
			if (cpio_reserve(cp, b - a) != 0)
				return -1;
			memcpy(cp->buf + cp->blen, p + (a - cp->pos), b - a);
			cp->blen += b - a;
		}
	}
	cp->pos += n;
	cp->skip -= n;
	return (ssize_t)n;
}


/*
** Feed stream bytes to the parser.  Returns the number of bytes consumed
** (less than len only when stop_at_trailer ends a plain segment), or -1 with
** cp->err set.
*/
static ssize_t
cpio_feed(struct cpio *cp, const unsigned char *p, size_t len)
{
	size_t i = 0;
	while (i < len) {
		int complete = 0;
		ssize_t n;
		switch (cp->state) {
		case ST_HEADER:
			if (cp->have == 0)
				cp->entry_pos = cp->pos;
			i += cpio_collect(cp, cp->hdr, NEWC_HDR, p + i, len - i, &complete);
			if (complete && cpio_header(cp) != 0)
				return -1;
			if (complete)
				cp->state = ST_NAME;
			continue;
		case ST_NAME:
			i += cpio_collect(cp, cp->name, cp->namesize, p + i, len - i, &complete);
			if (complete && cpio_named(cp) != 0)
				return -1;
			break;
		case ST_DATA:
			if ((n = cpio_data(cp, p + i, len - i)) < 0)
				return -1;
			i += (size_t)n;
			break;
		case ST_RESET:
			/* between archives of one compressed stream, like the kernel */
			if (p[i] == 0) {
				i++;
				cp->pos++;
			} else if (p[i] == '0' && (cp->pos & 3) == 0) {
				cp->state = ST_HEADER;
			} else {
				return cpio_fail(cp, "junk after cpio trailer", cp->pos);
			}
			continue;
		}
		if (cp->state == ST_DATA && cp->skip == 0) {
			cpio_entry_done(cp);
			if (cp->trailer && cp->stop_at_trailer)
				return (ssize_t)i;
		}
	}
	return (ssize_t)i;
}


static void
cpio_begin(struct cpio *cp, int segment, uint64_t pos, int stop_at_trailer)
{
	cp->segment = segment;
	cp->pos = pos;
	cp->entry_pos = pos;
	cp->stop_at_trailer = stop_at_trailer;
	cp->trailer = 0;
	cp->state = ST_HEADER;
	cp->have = 0;
	cp->want = 0;
	cp->err = NULL;
}


/* At the end of a stream: the parser must sit right after a trailer. */
static int
cpio_end(struct cpio *cp)
{
	if (cp->state == ST_RESET)
		return 0;
	if (cp->state == ST_HEADER && cp->have == 0)
		return cpio_fail(cp, "truncated cpio archive (no " TRAILER ")", cp->pos);
	return cpio_fail(cp, "truncated cpio entry", cp->entry_pos);
}


/* How the end of a compressed stream is found before it is decoded (compressed_span). */
enum span { SPAN_DECODER, SPAN_ZSTD, SPAN_XZ, SPAN_LZMA };

struct method {
	const char *name;
	const unsigned char *magic;
	size_t mlen;
	const struct unpacker *u;	/* NULL: libarchive's, from ARCHIVE_MODULE */
	enum span span;
};

/* The kernel's list (lib/decompress.c), plus the lz4 frame format. */
static const struct method methods[] = {
	{"gzip", (const unsigned char *)"\037\213", 2, &unpack_gzip, SPAN_DECODER},
	{"gzip", (const unsigned char *)"\037\236", 2, &unpack_gzip, SPAN_DECODER},
	{"bzip2", (const unsigned char *)"BZh", 3, NULL, SPAN_DECODER},
	{"lzma", (const unsigned char *)"\135\000\000", 3, NULL, SPAN_LZMA},
	{"xz", (const unsigned char *)"\3757zXZ\000", 6, NULL, SPAN_XZ},
	{"lzo", (const unsigned char *)"\211LZO", 4, NULL, SPAN_DECODER},
	{"lz4", (const unsigned char *)"\002!L\030", 4, NULL, SPAN_DECODER},
	{"lz4", (const unsigned char *)"\004\"M\030", 4, NULL, SPAN_DECODER},
	{"zstd", (const unsigned char *)"\050\265\057\375", 4, &unpack_zstd, SPAN_ZSTD},
	{NULL, NULL, 0, NULL, SPAN_DECODER}
};


static const struct method *
detect(const unsigned char *p, size_t len)
{
	for (const struct method *m = methods; m->name != NULL; m++)
		if (len >= m->mlen && memcmp(p, m->magic, m->mlen) == 0)
			return m;
	return NULL;
}


static uint32_t
le32(const unsigned char *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}


/* pread exactly n bytes at file offset `at`: 0, or -1 (an error or the end of the file). */
static int
read_at(int fd, size_t at, unsigned char *dst, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, dst + got, n - got, (off_t)(at + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}


/*
** Length of the run of zstd (and skippable) frames in the file `fd` at `base` (`len`
** bytes at most), walking the frame and block headers (RFC 8878) without
** decompressing; 0 when truncated. The headers are read with pread: the walk maps no
** page of the image (walked in place it faulted in, read-around and all, about the
** whole stream, to be released again).
*/
static size_t
zstd_span(int fd, size_t base, size_t len)
{
	unsigned char h[8];
	size_t off = 0;
	while (off + 4 <= len) {
		if (read_at(fd, base + off, h, len - off < 8 ? len - off : 8) != 0)
			return 0;
		uint32_t magic = le32(h);
		if ((magic & 0xFFFFFFF0u) == 0x184D2A50u) {
			if (off + 8 > len)
				return 0;
			uint64_t end = off + 8 + (uint64_t)le32(h + 4);
			if (end > len)
				return 0;
			off = end;
			continue;
		}
		if (magic != 0xFD2FB528u)
			break;
		if (off + 5 > len)
			return 0;
		unsigned d = h[4];
		size_t fcs[4] = {0, 2, 4, 8};
		size_t did[4] = {0, 1, 2, 4};
		size_t hl = 1 + (d & 0x20 ? 0 : 1) + did[d & 3] + fcs[d >> 6];
		if ((d >> 6) == 0 && (d & 0x20))
			hl += 1;
		off += 4 + hl;
		for (;;) {
			if (off + 3 > len || read_at(fd, base + off, h, 3) != 0)
				return 0;
			uint32_t bh = h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16;
			unsigned type = (bh >> 1) & 3;
			size_t bs = type == 1 ? 1 : bh >> 3;
			if (type == 3)
				return 0;
			off += 3 + bs;
			if (off > len)
				return 0;
			if (bh & 1)
				break;
		}
		if (d & 4)
			off += 4;
		if (off > len)
			return 0;
	}
	return off;
}


static uint32_t
crc32_ieee(const unsigned char *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
	}
	return ~c;
}


/*
** Length of the run of xz streams at p (with the zero padding between them).
** liblzma decodes concatenated streams and fails on anything else after them,
** so the end is found by looking for the stream footer: 4-byte aligned, its
** flags equal the header's, its CRC32 right and its backward size pointing
** at an index.  0 when no footer is found (truncated).
*/
static size_t
xz_span(const unsigned char *p, size_t len)
{
	size_t start = 0, end = 0;
	while (start + 12 <= len && memcmp(p + start, "\3757zXZ\000", 6) == 0) {
		size_t f;
		for (f = start + 24; f + 12 <= len; f += 4) {
			const unsigned char *ft = p + f;
			if (ft[10] != 'Y' || ft[11] != 'Z' || memcmp(ft + 8, p + start + 6, 2) != 0)
				continue;
			if (crc32_ieee(ft + 4, 6) != le32(ft))
				continue;
			uint64_t isize = ((uint64_t)le32(ft + 4) + 1) * 4;
			if (isize > f - start - 12 || p[f - isize] != 0)
				continue;
			break;
		}
		if (f + 12 > len)
			return 0;
		end = f + 12;
		start = end;
		while (start + 4 <= len && le32(p + start) == 0)
			start += 4;
	}
	return end;
}


static int
image_fail(lua_State *L, const char *path, const char *fmt, ...)
{
	va_list ap;
	lua_pushnil(L);
	lua_pushfstring(L, "%s: ", path);
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	lua_concat(L, 2);
	return 2;
}


static int
image_cpio_fail(lua_State *L, const char *path, struct cpio *cp,
    const struct method *m, size_t segoff)
{
	if (m == NULL)
		return image_fail(L, path, "%s at offset %I", cp->err,
		    (lua_Integer)cp->err_pos);
	return image_fail(L, path, "%s (byte %I of its data) in the %s segment at offset %I",
	    cp->err, (lua_Integer)cp->err_pos, m->name, (lua_Integer)segoff);
}


static void
push_segment(lua_State *L, int segments, int n, size_t offset, const char *comp)
{
	lua_createtable(L, 0, 3);
	lua_pushinteger(L, (lua_Integer)offset);
	lua_setfield(L, -2, "offset");
	lua_pushstring(L, comp);
	lua_setfield(L, -2, "compression");
	lua_rawseti(L, segments, n);
}


static void
set_segment_size(lua_State *L, int segments, int n, size_t size)
{
	lua_rawgeti(L, segments, n);
	lua_pushinteger(L, (lua_Integer)size);
	lua_setfield(L, -2, "size");
	lua_pop(L, 1);
}


/*
** How many bytes the compressed stream at off spans, as far as can be told
** before decompressing: exact for zstd and xz (*exact), the rest of the file
** for the others. 0 after pushing nil, msg: truncated, or an .lzma header
** asking for a dictionary over the limit.
*/
static size_t
compressed_span(lua_State *L, const char *path, struct reader *r, const struct method *m,
    size_t off, int *exact)
{
	size_t avail = r->len - off;
	*exact = 0;
	if (m->span == SPAN_ZSTD || m->span == SPAN_XZ) {
		avail = m->span == SPAN_ZSTD ? zstd_span(r->fd, off, avail)
		    : xz_span(r->map + off, avail);
		if (avail == 0) {
			image_fail(L, path, "truncated %s data at offset %I", m->name, (lua_Integer)off);
			return 0;
		}
		*exact = 1;
		/* xz's walk from its end faulted in the stream's last pages: let them go */
		if (m->span == SPAN_XZ)
			madvise(r->map, r->maplen, MADV_DONTNEED);
	}
	/*
	** liblzma allocates the dictionary an .lzma header asks for, and libarchive
	** sets no memory limit for this format (it does for xz: 1 GiB); bound it the same.
	*/
	if (m->span == SPAN_LZMA && avail >= 5 && le32(r->map + off + 1) > LZMA_DICT_MAX) {
		image_fail(L, path, "lzma dictionary of %I bytes is larger than 1 GiB at offset %I",
		    (lua_Integer)le32(r->map + off + 1), (lua_Integer)off);
		return 0;
	}
	return avail;
}


static void
corrupt(lua_State *L, const char *path, const struct unpacker *u, const struct method *m, size_t off,
    const char *why)
{
	image_fail(L, path, "corrupt or truncated %s data (%s: %s) at offset %I",
	    m->name, u->library, why != NULL ? why : "?", (lua_Integer)off);
}


/*
** m's decoder: its own, or libarchive's from ARCHIVE_MODULE, loaded now (require). NULL
** after pushing nil, msg: the module did not load.
*/
static const struct unpacker *
unpacker_of(lua_State *L, const char *path, const struct method *m, size_t off)
{
	const struct unpacker *u = m->u;
	if (u != NULL)
		return u;
	lua_getglobal(L, "require");
	lua_pushliteral(L, ARCHIVE_MODULE);
	if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
		lua_getfield(L, -1, "unpacker");
		u = lua_touserdata(L, -1);
		lua_pop(L, 2);
		if (u != NULL)
			return u;
		lua_pushliteral(L, "no field 'unpacker'");
	}
	/* require's first line: the paths it tried follow on the next ones */
	const char *e = lua_tostring(L, -1);
	size_t n = e != NULL ? strcspn(e, "\n") : 0;
	while (n > 0 && e[n - 1] == ':')
		n--;
	lua_pushlstring(L, e != NULL ? e : "", n);
	image_fail(L, path, "cannot read %s data: the module " ARCHIVE_MODULE " did not load (%s) at offset %I",
	    m->name, lua_tostring(L, -1), (lua_Integer)off);
	return NULL;
}


/* m's decoder over the `avail` bytes at off, open in r. 0, or -1 (pushed). */
static int
decoder_open(lua_State *L, const char *path, struct reader *r, const struct method *m,
    size_t off, size_t avail)
{
	const char *why = NULL;
	if ((r->u = unpacker_of(L, path, m, off)) == NULL)
		return -1;
	r->src.fd = r->fd;
	r->src.pos = off;
	r->src.end = off + avail;
	if ((r->d = r->u->open(&r->src, m->name, &why)) == NULL) {
		corrupt(L, path, r->u, m, off, why);
		return -1;
	}
	return 0;
}


/* Stream the decompressed bytes through the parser to the end. 0 or -1 (pushed). */
static int
decoder_feed(lua_State *L, const char *path, struct reader *r, const struct method *m, size_t off)
{
	const void *buf;
	size_t size;
	const char *why = NULL;
	int rc;
	while ((rc = r->u->next(r->d, &buf, &size, &why)) > 0) {
		if (cpio_feed(r->cp, buf, size) < 0) {
			image_cpio_fail(L, path, r->cp, m, off);
			return -1;
		}
	}
	if (rc < 0) {
		corrupt(L, path, r->u, m, off, why);
		return -1;
	}
	if (cpio_end(r->cp) != 0) {
		image_cpio_fail(L, path, r->cp, m, off);
		return -1;
	}
	return 0;
}


/*
** Decompress one compressed segment through the parser.  Returns the number
** of compressed bytes it spans, or 0 after pushing nil, msg.
*/
static size_t
image_compressed(lua_State *L, const char *path, struct reader *r,
    const struct method *m, size_t off, int nseg)
{
	int exact;
	size_t used, avail = compressed_span(L, path, r, m, off, &exact);
	if (avail == 0 || decoder_open(L, path, r, m, off, avail) != 0)
		return 0;
	cpio_begin(r->cp, nseg, 0, 0);
	if (decoder_feed(L, path, r, m, off) != 0)
		return 0;
	used = exact ? avail : r->u->used(r->d);
	r->u->close(r->d);
	r->d = NULL;
	if (used == 0 || used > r->len - off) {
		image_fail(L, path, "cannot tell where the %s data ends at offset %I",
		    m->name, (lua_Integer)off);
		return 0;
	}
	return used;
}


/* Stack slots of image.list (root, path, want are its arguments). */
enum { I_ROOT = 1, I_PATH, I_WANT, I_WINDOW, I_READER, I_ENTRIES, I_CONTENTS, I_SEGMENTS, I_NORM };


/*
** The want set at I_WANT as a table at I_NORM: name without "./" or "/" ->
** array of the want keys that name it. Returns I_NORM, or 0 without a want.
*/
static int
want_index(lua_State *L)
{
	if (!lua_istable(L, I_WANT))
		return 0;
	lua_newtable(L);	/* I_NORM */
	lua_pushnil(L);
	while (lua_next(L, I_WANT) != 0) {
		if (lua_type(L, -2) == LUA_TSTRING && lua_toboolean(L, -1)) {
			size_t n;
			const char *k = lua_tolstring(L, -2, &n);
			size_t s = strip_dot(k, n);
			lua_pushlstring(L, k + s, n - s);
			if (lua_rawget(L, I_NORM) != LUA_TTABLE) {
				lua_pop(L, 1);
				lua_newtable(L);
				lua_pushlstring(L, k + s, n - s);
				lua_pushvalue(L, -2);
				lua_rawset(L, I_NORM);
			}
			lua_pushvalue(L, -3);
			lua_rawseti(L, -2, luaL_len(L, -2) + 1);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	return I_NORM;
}


/*
** Narrow r to the window {offset=, size=} at I_WINDOW (checked by image_list),
** so the segments are those of a UKI's .initrd section; offsets in entries,
** segments and errors stay file offsets. 0, or pushes nil, msg -> 2.
*/
static int
window_apply(lua_State *L, const char *path, struct reader *r)
{
	if (lua_isnoneornil(L, I_WINDOW))
		return 0;
	lua_getfield(L, I_WINDOW, "offset");
	lua_getfield(L, I_WINDOW, "size");
	lua_Integer off = lua_tointeger(L, -2), size = lua_tointeger(L, -1);
	lua_pop(L, 2);
	if ((uint64_t)off > r->len || (uint64_t)size > r->len - (uint64_t)off) {
		image_fail(L, path, "window of %I bytes at offset %I is outside the file (%I bytes)",
		    size, off, (lua_Integer)r->len);
		return -1;
	}
	if (size == 0) {
		image_fail(L, path, "empty window at offset %I", off);
		return -1;
	}
	r->start = (size_t)off;
	r->len = (size_t)(off + size);
	return 0;
}


/* The window argument: nil, or a table of two non-negative integers (misuse raises). */
static void
window_check(lua_State *L)
{
	if (lua_isnoneornil(L, I_WINDOW))
		return;
	luaL_checktype(L, I_WINDOW, LUA_TTABLE);
	static const char *const keys[] = {"offset", "size"};
	for (int i = 0; i < 2; i++) {
		/* through lua_Number: Lua 5.1 has no lua_tointegerx */
		lua_getfield(L, I_WINDOW, keys[i]);
		int isnum = lua_type(L, -1) == LUA_TNUMBER;
		lua_Number n = lua_tonumber(L, -1);
		lua_pop(L, 1);
		if (!isnum || !(n >= 0 && n < 9007199254740992.0) || n != (lua_Number)(lua_Integer)n)
			luaL_error(L, "bad argument #4 to 'list' (window.%s must be a non-negative integer)", keys[i]);
	}
}


/*
** Open the image `path` inside root (every component resolves there; only a
** regular file, never blocking on a FIFO: src/fs.c) and map it. 0, or the
** values pushed.
*/
static int
image_map(lua_State *L, const char *root, const char *path, struct reader *r)
{
	struct stat st;
	if (vfi_open_regular(L, root, path, &r->fd, &st) != 0)
		return 3;  /* nil, msg, errno */
	if (st.st_size == 0)
		return image_fail(L, path, "empty file at offset 0");
	r->maplen = r->len = (size_t)st.st_size;
	if (window_apply(L, path, r) != 0)
		return 2;
	r->map = mmap(NULL, r->maplen, PROT_READ, MAP_PRIVATE, r->fd, 0);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		vfi_push_errno(L, path, errno);
		return 3;  /* spelled out: the analyzer cannot see vfi_push_errno's result */
	}
	madvise(r->map, r->maplen, MADV_SEQUENTIAL);
	return 0;
}


/* The plain cpio segment at off: its size, or 0 after pushing nil, msg. */
static size_t
image_plain(lua_State *L, const char *path, struct reader *r, size_t off, int nseg)
{
	ssize_t n;
	if (off & 3) {
		image_fail(L, path, "misaligned cpio archive at offset %I", (lua_Integer)off);
		return 0;
	}
	cpio_begin(r->cp, nseg, off, 1);
	n = cpio_feed(r->cp, r->map + off, r->len - off);
	if (n < 0 || cpio_end(r->cp) != 0) {
		image_cpio_fail(L, path, r->cp, NULL, 0);
		return 0;
	}
	return (size_t)n;
}


/* Walk the segments of the mapped image into entries, contents and segments. 0, or the values pushed. */
static int
image_segments(lua_State *L, const char *path, struct reader *r)
{
	size_t off = r->start, n;
	int nseg = 0;
	while (off < r->len) {
		const unsigned char *p = r->map + off;
		const struct method *m = NULL;
		if (*p == 0) {	/* padding between segments */
			off++;
			continue;
		}
		if (*p != '0' && (m = detect(p, r->len - off)) == NULL)
			return image_fail(L, path, "%s at offset %I", nseg == 0
			    ? "not an initramfs (no cpio or known compression magic)"
			    : "junk after the last segment", (lua_Integer)off);
		push_segment(L, I_SEGMENTS, ++nseg, off, m != NULL ? m->name : "none");
		n = m != NULL ? image_compressed(L, path, r, m, off, nseg) : image_plain(L, path, r, off, nseg);
		if (n == 0)
			return 2;
		set_segment_size(L, I_SEGMENTS, nseg, n);
		off += n;
	}
	if (nseg == 0)
		return image_fail(L, path, "no cpio archive (only zero bytes) at offset %I",
		    (lua_Integer)r->len);
	return 0;
}


static int
image_scan(lua_State *L, const char *root, const char *path, struct reader *r)
{
	int nerr;
	lua_newtable(L);	/* I_ENTRIES */
	lua_newtable(L);	/* I_CONTENTS */
	lua_newtable(L);	/* I_SEGMENTS */
	r->cp = calloc(1, sizeof(*r->cp));
	if (r->cp == NULL)
		return vfi_push_errno(L, path, ENOMEM);
	r->cp->L = L;
	r->cp->entries = I_ENTRIES;
	r->cp->contents = I_CONTENTS;
	r->cp->norm = want_index(L);
	if ((nerr = image_map(L, root, path, r)) != 0 || (nerr = image_segments(L, path, r)) != 0)
		return nerr;
	lua_pushvalue(L, I_ENTRIES);
	lua_pushvalue(L, I_CONTENTS);
	lua_pushvalue(L, I_SEGMENTS);
	return 3;
}


/***
List every member of an initramfs image: all concatenated cpio segments.
@function list
@string root host directory the image is in
@string path image file inside root, resolved there (symlinks cannot leave it)
and named so in errors
@tparam[opt] table want set of member names whose data to return ("./" and "/"
prefixes ignored; a key ending in "/" selects every member directly below)
@tparam[opt] table window `{offset=, size=}`: read only these bytes of the file (a
UKI's `.initrd` section); offsets reported stay file offsets
@treturn[1] table entries `{name=, type=, size=, segment=}`, in image order
@treturn[1] table contents `[want key] = data`
@treturn[1] table segments `{offset=, size=, compression=}`
@return[2] nil
@treturn[2] string "path: reason at offset N"
*/
static int
image_list(lua_State *L)
{
	const char *root = vfi_checkroot(L, I_ROOT);
	const char *path = vfi_checkpath(L, I_PATH);
	if (!lua_isnoneornil(L, I_WANT))
		luaL_checktype(L, I_WANT, LUA_TTABLE);
	window_check(L);
	lua_settop(L, I_WINDOW);
	/* created empty first: a Lua error (out of memory) lets __gc release */
	struct reader *r = lua_newuserdatauv(L, sizeof(*r), 0);	/* I_READER */
	r->fd = -1;
	r->map = NULL;
	r->len = 0;
	r->maplen = 0;
	r->start = 0;
	memset(&r->src, 0, sizeof r->src);
	r->u = NULL;
	r->d = NULL;
	r->cp = NULL;
	luaL_setmetatable(L, IMAGE_READER);
	int nret = image_scan(L, root, path, r);
	reader_free(r);
	return nret;
}


void
image_open(lua_State *L)
{
	vfi_class(L, IMAGE_READER, reader_gc, NULL);
	vfi_export(L, "image", "list", image_list);
}


/*
** A module of its own, vfioinit.core.image (src/core.c loads it on the first read of
** core.image.list): zlib and libzstd, which every command but an image read can do
** without; libarchive only for the rarer compressions (unpack.h).
*/
__attribute__((visibility("default"))) int
luaopen_vfioinit_core_image(lua_State *L)
{
	return vfi_open_part(L, "image", image_open);
}
