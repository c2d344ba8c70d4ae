/*
** fuzz/pe_signature.c: core.sig.read(root, path) and core.sig.verify(root, path, cert)
** on arbitrary bytes (src/sig.c, over the headers src/pehdr.c reads): the certificate
** table, its WIN_CERTIFICATE entries, the PKCS#7 and SpcIndirectDataContent in them,
** and the Authenticode digest. The input is "/img.efi" inside a private temp dir, the
** root. Seeds (fuzz/corpus/pe_signature/): a 1.5 KiB PE (the systemd stub's headers,
** one 512-byte section) unsigned, signed by sbsign with the throwaway key whose
** certificate is CERT below, and signed again by a second key.
*/
#ifndef _GNU_SOURCE  /* tools/fuzz passes -D_GNU_SOURCE */
#define _GNU_SOURCE
#endif
#include "harness.h"
#include "input_file.h"

int luaopen_vfioinit_core_sig(lua_State *L);

static const char *root;

/* the signer of the seeds: verify reaches PKCS7_verify on them */
static const char CERT[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIDMzCCAhugAwIBAgIUdCHLRDU06/PMY+c4512h18OXejcwDQYJKoZIhvcNAQEL\n"
	"BQAwKTEYMBYGA1UEAwwPdmZpb2luaXQgdGVzdCBhMQ0wCwYDVQQKDARUZXN0MB4X\n"
	"DTI2MTIwNjEyNTMzMVoXDTM2MTIwMzEyNTMzMVowKTEYMBYGA1UEAwwPdmZpb2lu\n"
	"aXQgdGVzdCBhMQ0wCwYDVQQKDARUZXN0MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n"
	"MIIBCgKCAQEAof757ANjBYiD+h79DzQ1HIJ3kkJGpSulUK8YSOyLEmMfHcP4whE5\n"
	"TiEwN/AP4pF9TGZdsEuqzvMTyfIM5vdTaK5kyJ/F9Ja/r7DPDcIcIbJn/VF+0dwP\n"
	"9oI3bcIIODYZL1aAN7i1lzLrWKS3j/QsZARJth8wCXoNWd8cwnm9kF5bgSTXvXkS\n"
	"iM/+NpnZh4fyeD5vymWr6rV5AffdxLo5iBfrzezhFuFUJIvEulQZLMo3OgScAJLD\n"
	"VLT8FNap4OOw2yHVvqO0g2KpddGUw//5ZsVldPS1SsrpMsDIgAEWj59UsWIvzRbN\n"
	"eh0iZRKE+SIaDTGQNpjy65dZk27j4+3kowIDAQABo1MwUTAdBgNVHQ4EFgQUmSRe\n"
	"PXsCI7/L5AR7X5yI1m8EiygwHwYDVR0jBBgwFoAUmSRePXsCI7/L5AR7X5yI1m8E\n"
	"iygwDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0BAQsFAAOCAQEAjU7yUwXNbn+P\n"
	"6Sa8s4XHLzsfMedvZKkmIpfe+5U80Lj8F7e5fYklog3tcbaCkHv2bjJxRT2Q64Au\n"
	"QQYTyNXy3G03M8rXYOjeFjLKYbU+rmJnMpxzpgFfbaidWtSAI2HLZm0hJ1YtSl2U\n"
	"RDM0pWpON4ybnD/w4Bu8u6ufPa6HRieSwR4bQfWyzWkJx1sQlPnSH5vqQPkZn3z8\n"
	"MgFedBEOn9n1IwKMCcVEbISapsnhk+GNim215OueQtzceWxwmVfTqVTZIks7CjGX\n"
	"RqzPVivtszgMWimWTiW7DbIUHuWpJbx0BGg8CQQmBBrBwFNJcXbIhKT91k3f0mPJ\n"
	"ywNwfe6j+w==\n"
	"-----END CERTIFICATE-----\n";


/* read(); then verify() against CERT, whatever read() said (verify parses on its own). */
static int
both(lua_State *L)
{
	lua_getfield(L, lua_upvalueindex(1), "read");
	lua_pushstring(L, root);
	lua_pushliteral(L, "/img.efi");
	lua_call(L, 2, 2);
	lua_getfield(L, lua_upvalueindex(1), "verify");
	lua_pushstring(L, root);
	lua_pushliteral(L, "/img.efi");
	lua_pushstring(L, CERT);
	lua_call(L, 3, 2);
	return 0;
}


static int
fuzz_call(lua_State *L, const uint8_t *data, size_t size)
{
	root = fuzz_input_file("img.efi", data, size);
	/* core.sig is a module of its own (no require in this state): opened directly */
	luaopen_vfioinit_core_sig(L);
	lua_setfield(L, 1, "sig");
	fuzz_push_fn(L, "sig", "read");  /* checks it exists */
	lua_pop(L, 1);
	lua_getfield(L, 1, "sig");
	lua_pushcclosure(L, both, 1);
	return 0;
}
