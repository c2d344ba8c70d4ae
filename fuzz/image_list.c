/*
** fuzz/image_list.c: core.image_list(path, want) on arbitrary bytes
** (src/image.c). The input goes into one memfd, rewritten for every run and
** opened by image_list through /proc/self/fd/N; `want` asks for the contents
** of the members verify reads (a plain name and a directory key), so the
** data-collecting path is fuzzed too.
*/
#ifndef _GNU_SOURCE  /* tools/fuzz passes -D_GNU_SOURCE */
#define _GNU_SOURCE
#endif
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "harness.h"

static int memfd = -1;
static char memfd_path[64];


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	if (memfd < 0) {
		memfd = memfd_create("vfioinit-fuzz-image", MFD_CLOEXEC);
		if (memfd < 0)
			abort();
		snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
	}
	if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size)
		abort();
	fuzz_push_fn(L, "image_list");
	lua_pushstring(L, memfd_path);
	lua_createtable(L, 0, 3);
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "conf/modules");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "./etc/cmdline.d/");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "/buildconfig");
	return 2;
}
