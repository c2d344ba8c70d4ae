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
#include "harness.h"
#include "input_file.h"


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	const char *root = fuzz_input_file("image", data, size);
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
