/*
** unpack_archive.c: the module vfioinit.core.archive, the decompressors image.c has no
** library of its own for (bzip2, lzma, xz, lzo, lz4): libarchive's filters over its
** "raw" format (a filter chain only). image.c loads it (require) at the first such
** segment and takes the `unpacker` field, a light userdata pointing to unpack_archive.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>

#include "core.h"
#include "unpack.h"

/* image.c's method names (the kernel's lib/decompress.c list) -> libarchive's filters. */
static const struct { const char *name; int code; } filters[] = {
	{"bzip2", ARCHIVE_FILTER_BZIP2},
	{"lzma", ARCHIVE_FILTER_LZMA},
	{"xz", ARCHIVE_FILTER_XZ},
	{"lzo", ARCHIVE_FILTER_LZOP},
	{"lz4", ARCHIVE_FILTER_LZ4},
};

struct ar {
	struct archive *a;
	struct unpack_src *src;
	int code;	/* the libarchive filter */
	int started;
};


/* libarchive's read callback: the next block of the segment. */
static la_ssize_t
ar_read(struct archive *a, void *data, const void **out)
{
	struct ar *r = data;
	const unsigned char *p;
	ssize_t n = unpack_read(r->src, &p);
	if (n < 0) {
		archive_set_error(a, errno, "read: %s", strerror(errno));
		return -1;
	}
	*out = p;
	return n;
}


static const char *
ar_error(struct ar *r)
{
	const char *why = archive_error_string(r->a);
	return why != NULL ? why : "?";
}


static void
ar_close(void *d)
{
	struct ar *r = d;
	archive_read_free(r->a);
	free(r);
}


/* Only allocates: libarchive's setup reads the first block, so the first next() does it. */
static void *
ar_open(struct unpack_src *src, const char *method, const char **why)
{
	int code = -1;
	for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
		if (strcmp(filters[i].name, method) == 0)
			code = filters[i].code;
	struct ar *r = calloc(1, sizeof(*r));
	if (r == NULL || code < 0 || (r->a = archive_read_new()) == NULL) {
		*why = code < 0 ? "no libarchive filter for it" : "out of memory";
		free(r);
		return NULL;
	}
	r->src = src;
	r->code = code;
	return r;
}


/* The filter over the raw format, at its only entry: 0, or -1 (the error is in r->a). */
static int
ar_start(struct ar *r)
{
	struct archive_entry *e;
	r->started = 1;
	return archive_read_support_format_raw(r->a) == ARCHIVE_OK
	    && archive_read_append_filter(r->a, r->code) >= ARCHIVE_WARN
	    && archive_read_open(r->a, r, NULL, ar_read, NULL) == ARCHIVE_OK
	    /* the raw format's bid reads the first block: a decoder error ends up here */
	    && archive_read_next_header(r->a, &e) == ARCHIVE_OK ? 0 : -1;
}


static int
ar_next(void *d, const void **out, size_t *n, const char **why)
{
	struct ar *r = d;
	la_int64_t boff;
	if (!r->started && ar_start(r) != 0) {
		*why = ar_error(r);
		return -1;
	}
	for (;;) {
		int rc = archive_read_data_block(r->a, out, n, &boff);
		if (rc == ARCHIVE_EOF)
			return 0;
		if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
			*why = ar_error(r);
			return -1;
		}
		if (*n > 0)
			return 1;
	}
}


static size_t
ar_used(void *d)
{
	struct ar *r = d;
	la_int64_t n = archive_filter_bytes(r->a, -1);
	return n > 0 ? (size_t)n : 0;
}


const struct unpacker unpack_archive = {ar_open, ar_next, ar_used, ar_close, "libarchive"};


__attribute__((visibility("default"))) int
luaopen_vfioinit_core_archive(lua_State *L)
{
	lua_createtable(L, 0, 1);
	lua_pushlightuserdata(L, (void *)&unpack_archive);
	lua_setfield(L, -2, "unpacker");
	return 1;
}
