/* fuzz/shell_scan.c: core.scan.shell(text) on arbitrary bytes (src/shell.c). */
#include <string.h>
#include "harness.h"


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	fuzz_push_fn(L, "scan", "shell");
	lua_pushlstring(L, (const char *)data, size);
	return 1;
}
