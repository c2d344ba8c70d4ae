/* fuzz/yaml_scan.c: core.yaml_scan(text) on arbitrary bytes (src/yaml.c). */
#include <string.h>
#include "harness.h"


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	fuzz_push_fn(L, "yaml_scan");
	lua_pushlstring(L, (const char *)data, size);
	return 1;
}
