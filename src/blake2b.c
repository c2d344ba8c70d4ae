/*
** core.sig.blake2b(root, path) -> 128 lowercase hex digits: the BLAKE2b-512 of a file
** inside root, what `b2sum` prints and what Limine pins on a path (`<path>#<hash>` in
** limine.conf). libcrypto's EVP_blake2b512, so it lives in the vfioinit.core.sig module
** (the one part that maps libcrypto); the file is streamed, never held whole.
*/
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core.h"

#define B2_CHUNK 16384


/* Feed fd to ctx to its end. 0 or errno (EIO: libcrypto refused). */
static int
feed(EVP_MD_CTX *ctx, int fd)
{
	unsigned char buf[B2_CHUNK];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n == 0)
			return 0;
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			return EIO;
	}
}


/***
The BLAKE2b-512 digest of a file (b2sum's, Limine's path hashes).
@function blake2b
@string root host directory the file is in
@string path file inside root
@treturn[1] string 128 lowercase hex digits
@return[2] nil
@treturn[2] string "path: reason"
*/
static int
sig_blake2b(lua_State *L)
{
	static const char hex[] = "0123456789abcdef";
	const char *root = vfi_checkroot(L, 1), *path = vfi_checkpath(L, 2);
	unsigned char md[EVP_MAX_MD_SIZE];
	char out[2 * EVP_MAX_MD_SIZE];
	unsigned len = 0, i;
	struct stat st;
	int fd, nret, err = 0;
	EVP_MD_CTX *ctx;
	if ((nret = vfi_open_regular(L, root, path, &fd, &st)) != 0)
		return nret;
	if ((ctx = EVP_MD_CTX_new()) == NULL) {
		close(fd);
		return luaL_error(L, "not enough memory");
	}
	if (EVP_DigestInit_ex(ctx, EVP_blake2b512(), NULL) != 1)
		err = EIO;
	if (err == 0)
		err = feed(ctx, fd);
	if (err == 0 && EVP_DigestFinal_ex(ctx, md, &len) != 1)
		err = EIO;
	EVP_MD_CTX_free(ctx);
	close(fd);
	if (err != 0)
		return vfi_push_errno(L, path, err);
	for (i = 0; i < len; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	lua_pushlstring(L, out, 2 * (size_t)len);
	return 1;
}


void
blake2b_open(lua_State *L)
{
	vfi_export(L, "sig", "blake2b", sig_blake2b);
}
