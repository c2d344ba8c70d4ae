/*
** fuzz/pe_sections.c: core.image.sections(root, path) and, when that succeeds,
** core.image.section(root, path, ".cmdline") on arbitrary bytes (src/pe.c). The
** input goes into one file, "/uki.efi" inside a private temp dir (on /dev/shm when
** there is one) that is the root, rewritten for every run. Seeds: the headers of
** real UKIs (the systemd stub + objcopy'd sections) cut after the section table.
*/
#ifndef _GNU_SOURCE  /* tools/fuzz passes -D_GNU_SOURCE */
#define _GNU_SOURCE
#endif
#include "harness.h"
#include "input_file.h"

static const char *root;


/* sections(); on success also section(".cmdline") so the data read is fuzzed too. */
static int
both(lua_State *L)
{
	lua_getfield(L, lua_upvalueindex(1), "sections");
	lua_pushstring(L, root);
	lua_pushliteral(L, "/uki.efi");
	lua_call(L, 2, 1);
	if (lua_isnil(L, -1))
		return 0;
	lua_getfield(L, lua_upvalueindex(1), "section");
	lua_pushstring(L, root);
	lua_pushliteral(L, "/uki.efi");
	lua_pushliteral(L, ".cmdline");
	lua_pushinteger(L, 65536);
	lua_call(L, 4, 2);
	return 0;
}


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	root = fuzz_input_file("uki.efi", data, size);
	fuzz_push_fn(L, "image", "sections");  /* checks it exists */
	lua_pop(L, 1);
	lua_getfield(L, 1, "image");
	lua_pushcclosure(L, both, 1);
	return 0;
}
