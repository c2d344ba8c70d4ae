/*
** unpack_zstd.c: zstd segments through libzstd's streaming decoder. image.c has
** already walked the frames (zstd_span), so the segment ends where they do: every
** byte of it must decode, and the last frame must be complete.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "unpack.h"

struct zs {
	ZSTD_DStream *ds;
	struct unpack_src *src;
	ZSTD_inBuffer in;
	size_t pending;	/* ZSTD_decompressStream's last hint: 0 at a frame's end */
	unsigned char out[UNPACK_BLOCK];
};


static void
zs_close(void *d)
{
	struct zs *z = d;
	ZSTD_freeDStream(z->ds);
	free(z);
}


static void *
zs_open(struct unpack_src *src, const char *method, const char **why)
{
	(void)method;
	struct zs *z = calloc(1, sizeof(*z));
	if (z == NULL || (z->ds = ZSTD_createDStream()) == NULL) {
		free(z);
		*why = "out of memory";
		return NULL;
	}
	z->src = src;
	z->pending = 1;
	return z;
}


static int
zs_next(void *d, const void **out, size_t *n, const char **why)
{
	struct zs *z = d;
	ZSTD_outBuffer ob = {z->out, sizeof z->out, 0};
	while (ob.pos < ob.size) {
		if (z->in.pos == z->in.size) {
			const unsigned char *in;
			ssize_t r = unpack_read(z->src, &in);
			if (r < 0) {
				*why = strerror(errno);
				return -1;
			}
			if (r == 0) {
				if (z->pending != 0) {
					*why = "truncated frame";
					return -1;
				}
				break;
			}
			z->in.src = in;
			z->in.size = (size_t)r;
			z->in.pos = 0;
		}
		size_t rc = ZSTD_decompressStream(z->ds, &ob, &z->in);
		if (ZSTD_isError(rc)) {
			*why = ZSTD_getErrorName(rc);
			return -1;
		}
		z->pending = rc;
	}
	*out = z->out;
	*n = ob.pos;
	return ob.pos > 0 ? 1 : 0;
}


/* image.c's walk of the frames measured the span: it reads no further. */
static size_t
zs_used(void *d)
{
	(void)d;
	return 0;
}


const struct unpacker unpack_zstd = {zs_open, zs_next, zs_used, zs_close, "libzstd"};
