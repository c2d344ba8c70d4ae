/*
** unpack_gzip.c: gzip segments through zlib. Members that follow each other
** directly are one stream (gzip -d and libarchive read them so); the stream ends
** after the last member's trailer, which zlib reports exactly, so the next segment
** is found there.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "unpack.h"

struct gz {
	z_stream z;
	struct unpack_src *src;
	size_t start;	/* the stream's first byte */
	size_t end;	/* after the last member's trailer, once known */
	int done;
	unsigned char out[UNPACK_BLOCK];
};


static void
gz_close(void *d)
{
	struct gz *g = d;
	inflateEnd(&g->z);
	free(g);
}


static void *
gz_open(struct unpack_src *src, const char *method, const char **why)
{
	(void)method;
	struct gz *g = calloc(1, sizeof(*g));
	if (g == NULL) {
		*why = "out of memory";
		return NULL;
	}
	g->src = src;
	g->start = src->pos;
	/* 16 + MAX_WBITS: a gzip header and trailer (CRC-32, length) around deflate data */
	if (inflateInit2(&g->z, 16 + MAX_WBITS) != Z_OK) {
		*why = g->z.msg != NULL ? g->z.msg : "cannot start inflate";
		free(g);
		return NULL;
	}
	return g;
}


/* Does another member start right at the file offset `at` (magic, deflate, no reserved flags)? */
static int
gz_member_at(struct gz *g, size_t at)
{
	unsigned char h[4];
	if (at + sizeof h > g->src->end)
		return 0;
	ssize_t n;
	do
		n = pread(g->src->fd, h, sizeof h, (off_t)at);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof h && h[0] == 0x1f && h[1] == 0x8b && h[2] == 8 && (h[3] & 0xe0) == 0;
}


static int
gz_next(void *d, const void **out, size_t *n, const char **why)
{
	struct gz *g = d;
	if (g->done)
		return 0;
	g->z.next_out = g->out;
	g->z.avail_out = sizeof g->out;
	while (g->z.avail_out > 0) {
		if (g->z.avail_in == 0) {
			const unsigned char *in;
			ssize_t r = unpack_read(g->src, &in);
			if (r < 0) {
				*why = strerror(errno);
				return -1;
			}
			if (r == 0) {
				*why = "unexpected end of file";
				return -1;
			}
			g->z.next_in = (unsigned char *)in;
			g->z.avail_in = (uInt)r;
		}
		int rc = inflate(&g->z, Z_NO_FLUSH);
		if (rc == Z_STREAM_END) {
			size_t at = g->src->pos - g->z.avail_in;
			if (!gz_member_at(g, at)) {
				g->end = at;
				g->done = 1;
				break;
			}
			/* the next member: read on from its first byte */
			inflateReset(&g->z);
			g->src->pos = at;
			g->z.avail_in = 0;
		} else if (rc != Z_OK) {
			*why = g->z.msg != NULL ? g->z.msg : rc == Z_MEM_ERROR ? "out of memory" : "corrupt data";
			return -1;
		}
	}
	*out = g->out;
	*n = sizeof g->out - g->z.avail_out;
	return *n > 0 ? 1 : 0;	/* the loop fills the block unless the stream ended */
}


static size_t
gz_used(void *d)
{
	struct gz *g = d;
	return g->done ? g->end - g->start : 0;
}


const struct unpacker unpack_gzip = {gz_open, gz_next, gz_used, gz_close, "zlib"};
