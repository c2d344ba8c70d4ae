/*
** unpack.c: the block reader every decompressor of unpack.h reads a segment with.
*/
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "unpack.h"

ssize_t
unpack_read(struct unpack_src *src, const unsigned char **out)
{
	size_t want = src->end - src->pos;
	ssize_t n;
	if (want > UNPACK_BLOCK)
		want = UNPACK_BLOCK;
	if (want == 0)
		return 0;
	if (src->buf == NULL && (src->buf = malloc(UNPACK_BLOCK)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	do
		n = pread(src->fd, src->buf, want, (off_t)src->pos);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	if (n == 0) {	/* the file shrank under us */
		errno = EIO;
		return -1;
	}
	src->pos += (size_t)n;
	*out = src->buf;
	return n;
}
