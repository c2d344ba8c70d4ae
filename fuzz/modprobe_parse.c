/* fuzz/modprobe_parse.c: vfioinit.modprobe.parse(text), the modprobe.d(5) reader, on
** arbitrary bytes; its errors must read "LINE: reason". */
#define FUZZ_MODULE "vfioinit.modprobe"
#define FUZZ_FUNC "parse"
#define FUZZ_ERR_LINE 1
#include "lua_parser.h"
