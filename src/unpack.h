/*
** unpack.h: the decompressors image.c drives, a table of variants (as libkmod's
** comp_types[]): gzip through zlib and zstd through libzstd (unpack_gzip.c,
** unpack_zstd.c, in vfioinit.core.image), the kernel's other compressions through
** libarchive's filters (unpack_archive.c, the module vfioinit.core.archive: libarchive
** brings libxml2, ICU, libstdc++ and nettle, 2.4 MB resident and some milliseconds of
** dynamic linking that the images most distributions build, gzip and zstd, do without).
**
** A decoder reads one compressed segment's bytes from the image file in blocks (pread,
** as bsdtar reads) and hands back decompressed blocks until the stream's end.
*/
#ifndef VFIOINIT_UNPACK_H
#define VFIOINIT_UNPACK_H

#include <stddef.h>
#include <sys/types.h>

#define UNPACK_BLOCK (64u << 10)	/* compressed bytes per read; decompressed bytes per block */

/* The segment's compressed bytes: the file, the next offset read, the segment's end. */
struct unpack_src {
	int fd;
	size_t pos, end;
	unsigned char *buf;	/* UNPACK_BLOCK bytes, allocated on the first read; freed by image.c */
};

/*
** The next block of the segment at src->pos (advanced): its length, 0 at the segment's
** end, -1 with errno set (read error, or ENOMEM for the buffer).
*/
ssize_t unpack_read(struct unpack_src *src, const unsigned char **out);

struct unpacker {
	/* A decoder of compression `method` (image.c's name: "gzip", "xz", ...) over src, or NULL with *why set. */
	void *(*open)(struct unpack_src *src, const char *method, const char **why);
	/*
	** The next decompressed block: 1 (*out, *n set; valid until the next call), 0 at the
	** stream's end, -1 corrupt, truncated or an I/O error (*why: the library's words).
	*/
	int (*next)(void *d, const void **out, size_t *n, const char **why);
	/* After next() returned 0: the compressed bytes the stream spanned; 0 when it cannot tell. */
	size_t (*used)(void *d);
	void (*close)(void *d);
	const char *library;	/* named in errors: "zlib", "libzstd", "libarchive" */
};

extern const struct unpacker unpack_gzip, unpack_zstd;
/* unpack_archive is not linked into vfioinit.core.image: its module's `unpacker` field points to it. */
extern const struct unpacker unpack_archive;

#endif
