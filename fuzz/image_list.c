/*
** fuzz/image_list.c: core.image.list(root, path, want) on arbitrary bytes
** (src/image.c). The input goes into one file, "/image" inside a private temp
** dir (on /dev/shm when there is one) that is the root, rewritten for every
** run; `want` asks for the contents of the members verify reads (a plain name
** and a directory key), so the data-collecting path is fuzzed too. Half the
** inputs are read through a byte window {offset=, size=} as a UKI's .initrd
** is: the first bytes place it, now and then past the end (an error).
*/
#ifndef _GNU_SOURCE  /* tools/fuzz passes -D_GNU_SOURCE */
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "harness.h"

static int imgfd = -1;
static char root[64], image[80];


static void
cleanup(void)
{
	unlink(image);
	rmdir(root);
}


/* The root dir and its image file, made once per process. */
static void
make_root(void)
{
	strcpy(root, access("/dev/shm", W_OK) == 0 ? "/dev/shm/vfioinit-fuzz-XXXXXX" : "/tmp/vfioinit-fuzz-XXXXXX");
	if (mkdtemp(root) == NULL)
		abort();
	snprintf(image, sizeof image, "%s/image", root);
	imgfd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (imgfd < 0)
		abort();
	atexit(cleanup);
}


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	if (imgfd < 0)
		make_root();
	if (ftruncate(imgfd, 0) != 0 || pwrite(imgfd, data, size, 0) != (ssize_t)size)
		abort();
	fuzz_push_fn(L, "image", "list");
	lua_pushstring(L, root);
	lua_pushliteral(L, "/image");
	lua_createtable(L, 0, 3);
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "conf/modules");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "./etc/cmdline.d/");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "/buildconfig");
	if (size >= 4 && (data[0] & 1)) {
		size_t off = ((size_t)data[1] << 8 | data[2]) % size;
		size_t len = size - off - (data[3] & 1 ? 0 : (size - off) / 2);
		if ((data[0] & 6) == 6)
			len += 1;	/* one byte past the end of the file */
		lua_createtable(L, 0, 2);
		lua_pushinteger(L, (lua_Integer)off);
		lua_setfield(L, -2, "offset");
		lua_pushinteger(L, (lua_Integer)len);
		lua_setfield(L, -2, "size");
		return 4;
	}
	return 3;
}
