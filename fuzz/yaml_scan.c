/* fuzz/yaml_scan.c: core.scan.yaml(text) on arbitrary bytes (src/yaml.c). */
#include <string.h>
#include "harness.h"


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	fuzz_push_fn(L, "scan", "yaml");
	lua_pushlstring(L, (const char *)data, size);
	return 1;
}
