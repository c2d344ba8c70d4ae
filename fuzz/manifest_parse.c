/* fuzz/manifest_parse.c: vfioinit.state.parse_manifest(text) on arbitrary bytes. */
#define FUZZ_MODULE "vfioinit.state"
#define FUZZ_FUNC "parse_manifest"
#include "lua_parser.h"
