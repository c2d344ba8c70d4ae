/*
** core.sig: the Authenticode signatures of a PE/COFF image (a UKI, the systemd-boot
** stub, shim, GRUB), as UEFI Secure Boot checks them.
**
**   local info = core.sig.read(root, path)     -- digest and signatures, or nil, msg
**   local n = core.sig.verify(root, path, certs) -- the signature certs verify, false, why, or nil, msg
**   local c = core.sig.cert(data)              -- one X.509 certificate (PEM or DER)
**
** The digest follows the Authenticode rules (Microsoft's "Windows Authenticode
** Portable Executable Signature Format"; sbsigntool hashes the same): the headers up
** to SizeOfHeaders minus the CheckSum field and the certificate-table directory
** entry, then each section's raw data in file order, then whatever follows the
** sections up to the certificate table, which is itself left out. The table
** (optional header data directory [4], a file offset) holds WIN_CERTIFICATE entries,
** each 8-byte aligned: dwLength, wRevision 0x0200, wCertificateType 0x0002 (PKCS#7
** SignedData) and the DER. The SignedData's content is an SpcIndirectDataContent
** whose DigestInfo names the algorithm and the digest signed; the PKCS#7 signature
** covers that content without its outer tag and length.
**
** verify trusts the certificates given as firmware does a db entry: any of them may
** anchor the chain (a CA or the signer itself), and neither validity dates (firmware
** has no trusted clock) nor key usage are checked.
**
** A module of its own, vfioinit.core.sig (src/core.c loads it on first use of
** core.sig): libcrypto is mapped only by a process that reads signatures.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "core.h"

#define SIG_GUARD "vfioinit.SigGuard"
#define SIG_TABLE_MAX (1 << 20)	/* a certificate table larger than this is refused */
#define SIG_MAX_DIGESTS 4	/* distinct digest algorithms computed per file */
#define SIG_CHUNK 16384
#define SPC_INDIRECT_DATA "1.3.6.1.4.1.311.2.1.4"
#define WIN_CERT_REVISION_2_0 0x0200
#define WIN_CERT_TYPE_PKCS_SIGNED_DATA 0x0002

/* Every OpenSSL object of a call, freed by __gc if a Lua error (out of memory) cuts it short. */
struct sig_guard {
	PKCS7 *p7;
	EVP_MD_CTX *md;
	X509_STORE *store;
	BIO *bio;
	STACK_OF(X509) *signers;
	X509 *cert;
	X509_SIG *dinfo;
	unsigned char *table;	/* the certificate table */
};

/* The digests of one file, per algorithm, computed on first use. */
struct sig_digests {
	int n;
	struct { int nid; unsigned len; unsigned char md[EVP_MAX_MD_SIZE]; } d[SIG_MAX_DIGESTS];
};

/* One WIN_CERTIFICATE's PKCS#7, picked apart. Pointers are into g->p7 / g->dinfo. */
struct sig_entry {
	const unsigned char *content;	/* SpcIndirectDataContent's content octets */
	long content_len;
	const EVP_MD *md;
	const ASN1_OCTET_STRING *digest;
};


static void
guard_free_entry(struct sig_guard *g)
{
	X509_SIG_free(g->dinfo);
	g->dinfo = NULL;
	PKCS7_free(g->p7);
	g->p7 = NULL;
	sk_X509_free(g->signers);
	g->signers = NULL;
}


static int
guard_gc(lua_State *L)
{
	struct sig_guard *g = luaL_checkudata(L, 1, SIG_GUARD);
	guard_free_entry(g);
	EVP_MD_CTX_free(g->md);
	g->md = NULL;
	X509_STORE_free(g->store);
	g->store = NULL;
	BIO_free(g->bio);
	g->bio = NULL;
	X509_free(g->cert);
	g->cert = NULL;
	free(g->table);
	g->table = NULL;
	return 0;
}


static struct sig_guard *
guard_new(lua_State *L)
{
	struct sig_guard *g = lua_newuserdatauv(L, sizeof *g, 0);
	memset(g, 0, sizeof *g);
	luaL_setmetatable(L, SIG_GUARD);
	return g;
}


static void
push_hex(lua_State *L, const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < n; i++) {
		luaL_addchar(&b, hex[p[i] >> 4]);
		luaL_addchar(&b, hex[p[i] & 15]);
	}
	luaL_pushresult(&b);
}


static void
push_name(lua_State *L, const X509_NAME *name)
{
	char buf[512];
	if (name == NULL || X509_NAME_oneline(name, buf, sizeof buf) == NULL)
		buf[0] = '\0';
	lua_pushstring(L, buf);
}


/* Set field serial of the table on top to the hex of an ASN.1 integer. */
static void
set_serial(lua_State *L, const ASN1_INTEGER *serial)
{
	if (serial == NULL)
		return;
	push_hex(L, ASN1_STRING_get0_data(serial), (size_t)ASN1_STRING_length(serial));
	lua_setfield(L, -2, "serial");
}


/* {subject=, issuer=, serial=, fingerprint= (SHA-256 of the DER)} of cert. */
static void
push_cert(lua_State *L, X509 *cert)
{
	unsigned char fp[EVP_MAX_MD_SIZE];
	unsigned fplen = 0;
	lua_createtable(L, 0, 4);
	push_name(L, X509_get_subject_name(cert));
	lua_setfield(L, -2, "subject");
	push_name(L, X509_get_issuer_name(cert));
	lua_setfield(L, -2, "issuer");
	set_serial(L, X509_get0_serialNumber(cert));
	if (X509_digest(cert, EVP_sha256(), fp, &fplen) == 1) {
		push_hex(L, fp, fplen);
		lua_setfield(L, -2, "fingerprint");
	}
}


static int
fail(lua_State *L, const char *fmt, ...)
{
	va_list ap;
	ERR_clear_error();
	lua_pushnil(L);
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	return 2;
}


/* Feed [off, off+len) of the file to ctx. 0 or errno (EIO: the file shrank). */
static int
hash_range(struct vfi_pe *f, EVP_MD_CTX *ctx, uint64_t off, uint64_t len)
{
	unsigned char buf[SIG_CHUNK];
	while (len > 0) {
		size_t n = len < sizeof buf ? (size_t)len : sizeof buf;
		int err = vfi_pe_pread(f, buf, n, off);
		if (err != 0)
			return err;
		if (EVP_DigestUpdate(ctx, buf, n) != 1)
			return EIO;
		off += n;
		len -= n;
	}
	return 0;
}


static int
by_offset(const void *a, const void *b)
{
	const struct vfi_pe_section *x = *(const struct vfi_pe_section *const *)a;
	const struct vfi_pe_section *y = *(const struct vfi_pe_section *const *)b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}


/*
** The Authenticode digest of f with md into out. NULL, or why not (a static string;
** *err set for a read error).
*/
static const char *
authenticode(struct vfi_pe *f, EVP_MD_CTX *ctx, const EVP_MD *md, unsigned char *out, unsigned *outlen, int *err)
{
	const struct vfi_pe_section *order[VFI_PE_MAX_SECTIONS];
	uint64_t hashed = f->hdr_size;
	int i, n = 0;
	*err = 0;
	for (i = 0; i < f->n; i++) {
		const struct vfi_pe_section *s = &f->sec[i];
		if (s->rawsize == 0)
			continue;
		if (s->offset > f->size || s->rawsize > f->size - s->offset)
			return "a section's raw data lies past the end of the file";
		order[n++] = s;
		hashed += s->rawsize;
	}
	qsort(order, (size_t)n, sizeof order[0], by_offset);
	if (EVP_DigestInit_ex(ctx, md, NULL) != 1)
		return "the digest algorithm is not available";
	if ((*err = hash_range(f, ctx, 0, f->cksum_off)) != 0
	    || (*err = hash_range(f, ctx, f->cksum_off + 4, f->certdir_off - f->cksum_off - 4)) != 0
	    || (*err = hash_range(f, ctx, f->certdir_off + 8, f->hdr_size - f->certdir_off - 8)) != 0)
		return NULL;
	for (i = 0; i < n; i++)
		if ((*err = hash_range(f, ctx, order[i]->offset, order[i]->rawsize)) != 0)
			return NULL;
	if (hashed + f->cert_size < f->size && (*err = hash_range(f, ctx, hashed, f->size - hashed - f->cert_size)) != 0)
		return NULL;
	if (EVP_DigestFinal_ex(ctx, out, outlen) != 1)
		return "the digest could not be computed";
	return NULL;
}


/* The digest of f with md, from the cache d or computed into it. NULL and msg pushed (2 or 3 values in *nret). */
static const unsigned char *
digest_of(lua_State *L, const char *path, struct vfi_pe *f, struct sig_guard *g, struct sig_digests *d,
    const EVP_MD *md, unsigned *len, int *nret)
{
	int i, err, nid = EVP_MD_type(md);
	for (i = 0; i < d->n; i++)
		if (d->d[i].nid == nid) {
			*len = d->d[i].len;
			return d->d[i].md;
		}
	if (d->n == SIG_MAX_DIGESTS) {
		*nret = fail(L, "%s: signatures with more than %d digest algorithms", path, SIG_MAX_DIGESTS);
		return NULL;
	}
	if (g->md == NULL && (g->md = EVP_MD_CTX_new()) == NULL)
		luaL_error(L, "not enough memory");
	const char *why = authenticode(f, g->md, md, d->d[d->n].md, &d->d[d->n].len, &err);
	if (err != 0) {
		*nret = vfi_push_errno(L, path, err);
		return NULL;
	}
	if (why != NULL) {
		*nret = fail(L, "%s: not a PE image (%s)", path, why);
		return NULL;
	}
	d->d[d->n].nid = nid;
	*len = d->d[d->n].len;
	return d->d[d->n++].md;
}


/* Open path and read its certificate table into g->table (*size bytes, 0: unsigned). 0 or the values pushed. */
static int
load(lua_State *L, const char *root, const char *path, struct sig_guard *g, struct vfi_pe **f, size_t *size)
{
	int nret = vfi_pe_load(L, root, path, f), err;
	*size = 0;
	if (nret != 0)
		return nret;
	if ((*f)->opt_why != NULL)
		return fail(L, "%s: not a PE image (%s)", path, (*f)->opt_why);
	if ((*f)->cert_off == 0 || (*f)->cert_size == 0)
		return 0;
	if ((*f)->cert_off > (*f)->size || (*f)->cert_size > (*f)->size - (*f)->cert_off)
		return fail(L, "%s: the certificate table lies past the end of the file", path);
	if ((*f)->cert_off < (*f)->hdr_size)
		return fail(L, "%s: the certificate table overlaps the headers", path);
	if ((*f)->cert_size > SIG_TABLE_MAX)
		return fail(L, "%s: the certificate table is %d bytes (limit %d)", path, (int)(*f)->cert_size, SIG_TABLE_MAX);
	if ((g->table = malloc((*f)->cert_size)) == NULL)
		return luaL_error(L, "not enough memory");
	if ((err = vfi_pe_pread(*f, g->table, (*f)->cert_size, (*f)->cert_off)) != 0)
		return vfi_push_errno(L, path, err);
	*size = (*f)->cert_size;
	return 0;
}


/*
** The WIN_CERTIFICATE at *pos of the table: its PKCS#7 into g->p7, picked apart into e;
** *pos moved to the next entry. 0, or pushes nil, msg (2).
*/
static int
entry(lua_State *L, const char *path, struct sig_guard *g, size_t size, size_t *pos, int idx, struct sig_entry *e)
{
	const unsigned char *p = g->table + *pos, *q;
	char oid[64];
	long len;
	int tag, class;
	guard_free_entry(g);
	uint32_t dwlen = vfi_rd32(p);
	if (dwlen < 8 || dwlen > size - *pos)
		return fail(L, "%s: certificate table entry %d: length %d outside the table", path, idx, (int)dwlen);
	if ((p[4] | p[5] << 8) != WIN_CERT_REVISION_2_0 || (p[6] | p[7] << 8) != WIN_CERT_TYPE_PKCS_SIGNED_DATA)
		return fail(L, "%s: certificate table entry %d: not a revision 2.0 PKCS#7 SignedData certificate", path, idx);
	*pos += ((size_t)dwlen + 7) & ~(size_t)7;
	q = p + 8;
	if ((g->p7 = d2i_PKCS7(NULL, &q, (long)dwlen - 8)) == NULL || !PKCS7_type_is_signed(g->p7)
	    || g->p7->d.sign == NULL || g->p7->d.sign->contents == NULL)
		return fail(L, "%s: certificate table entry %d: not PKCS#7 SignedData", path, idx);
	PKCS7 *c = g->p7->d.sign->contents;
	if (c->type == NULL || OBJ_obj2txt(oid, sizeof oid, c->type, 1) <= 0 || strcmp(oid, SPC_INDIRECT_DATA) != 0
	    || c->d.other == NULL || c->d.other->type != V_ASN1_SEQUENCE)
		return fail(L, "%s: certificate table entry %d: the signed content is not an Authenticode SpcIndirectDataContent",
		    path, idx);
	const ASN1_STRING *seq = c->d.other->value.sequence;
	const unsigned char *s = ASN1_STRING_get0_data(seq);
	long slen = ASN1_STRING_length(seq);
	/* SEQUENCE { SpcAttributeTypeAndOptionalValue, DigestInfo } */
	q = s;
	if (ASN1_get_object(&q, &len, &tag, &class, slen) & 0x80 || tag != V_ASN1_SEQUENCE)
		goto bad;
	e->content = q;
	e->content_len = len;
	const unsigned char *end = q + len;
	if (ASN1_get_object(&q, &len, &tag, &class, end - q) & 0x80 || tag != V_ASN1_SEQUENCE)
		goto bad;
	q += len;
	if ((g->dinfo = d2i_X509_SIG(NULL, &q, end - q)) == NULL)
		goto bad;
	const X509_ALGOR *alg;
	X509_SIG_get0(g->dinfo, &alg, &e->digest);
	if ((e->md = EVP_get_digestbyobj(alg->algorithm)) == NULL)
		return fail(L, "%s: certificate table entry %d: unknown digest algorithm", path, idx);
	g->signers = PKCS7_get0_signers(g->p7, NULL, 0);
	ERR_clear_error();
	return 0;
bad:
	return fail(L, "%s: certificate table entry %d: malformed SpcIndirectDataContent", path, idx);
}


/* Whether the table has another entry at pos (anything shorter than a header is padding). */
static int
more(size_t size, size_t pos)
{
	return pos < size && size - pos >= 8;
}


/* One call's pass over an image's certificate table. */
struct sig_walk {
	const char *path;
	struct sig_guard *g;
	struct vfi_pe *f;
	struct sig_digests d;
	size_t size, pos;
	int idx;
	struct sig_entry e;	/* the current entry */
	const unsigned char *md;	/* the file's digest with e.md */
	unsigned mdlen;
	int digest_ok;	/* e's signed digest is md */
};


/* Open the image of arguments 1 (root) and 2 (path) for w, with the guard g. 0 or the values pushed. */
static int
walk_open(lua_State *L, struct sig_walk *w, struct sig_guard *g)
{
	const char *root = vfi_checkroot(L, 1);
	memset(w, 0, sizeof *w);
	w->path = vfi_checkpath(L, 2);
	w->g = g;
	return load(L, root, w->path, g, &w->f, &w->size);
}


/* The next entry and the file's digest with its algorithm: 1, 0 after the last, or -(values pushed). */
static int
walk_next(lua_State *L, struct sig_walk *w)
{
	int nret = 0;
	if (!more(w->size, w->pos))
		return 0;
	if ((nret = entry(L, w->path, w->g, w->size, &w->pos, ++w->idx, &w->e)) != 0)
		return -nret;
	if ((w->md = digest_of(L, w->path, w->f, w->g, &w->d, w->e.md, &w->mdlen, &nret)) == NULL)
		return -nret;
	w->digest_ok = (int)w->mdlen == ASN1_STRING_length(w->e.digest)
	    && memcmp(w->md, ASN1_STRING_get0_data(w->e.digest), w->mdlen) == 0;
	return 1;
}


/***
The Authenticode digest and signatures of a PE/COFF image.
@function read
@string root host directory the image is in
@string path image file inside root
@treturn[1] table `{digest=SHA-256 hex, signatures={ {algorithm="sha256", digest=hex signed,
  digest_ok=bool, signer={subject=, issuer=, serial=, fingerprint=}, certificates={...}}, ...}}`;
  `signatures` is empty for an unsigned image
@return[2] nil
@treturn[2] string "path: not a PE image (reason)", "path: certificate table entry N: ..."
*/
static int
sig_read(lua_State *L)
{
	struct sig_walk w;
	unsigned len;
	int nret = 0, r;
	if ((nret = walk_open(L, &w, guard_new(L))) != 0)
		return nret;
	lua_createtable(L, 0, 2);
	const unsigned char *md = digest_of(L, w.path, w.f, w.g, &w.d, EVP_sha256(), &len, &nret);
	if (md == NULL)
		return nret;
	push_hex(L, md, len);
	lua_setfield(L, -2, "digest");
	lua_newtable(L);
	while ((r = walk_next(L, &w)) > 0) {
		lua_createtable(L, 0, 5);
		lua_pushstring(L, OBJ_nid2ln(EVP_MD_type(w.e.md)));
		lua_setfield(L, -2, "algorithm");
		push_hex(L, ASN1_STRING_get0_data(w.e.digest), (size_t)ASN1_STRING_length(w.e.digest));
		lua_setfield(L, -2, "digest");
		lua_pushboolean(L, w.digest_ok);
		lua_setfield(L, -2, "digest_ok");
		if (w.g->signers != NULL && sk_X509_num(w.g->signers) > 0) {
			push_cert(L, sk_X509_value(w.g->signers, 0));
			lua_setfield(L, -2, "signer");
		}
		STACK_OF(X509) *certs = w.g->p7->d.sign->cert;
		lua_createtable(L, sk_X509_num(certs) > 0 ? sk_X509_num(certs) : 0, 0);
		for (int i = 0; i < sk_X509_num(certs); i++) {
			push_cert(L, sk_X509_value(certs, i));
			lua_rawseti(L, -2, i + 1);
		}
		lua_setfield(L, -2, "certificates");
		lua_rawseti(L, -2, w.idx);
	}
	if (r < 0)
		return -r;
	lua_setfield(L, -2, "signatures");
	vfi_pe_close(w.f);
	return 1;
}


/* Add the certificates of data (one or more PEM, or one DER) to store. The count added. */
static int
add_certs(struct sig_guard *g, const char *data, size_t len)
{
	int n = 0;
	X509 *x;
	BIO_free(g->bio);
	if ((g->bio = BIO_new_mem_buf(data, (int)len)) == NULL)
		return 0;
	while ((x = PEM_read_bio_X509(g->bio, NULL, NULL, NULL)) != NULL) {
		g->cert = x;
		n += X509_STORE_add_cert(g->store, x) == 1;
		X509_free(x);
		g->cert = NULL;
	}
	if (n == 0) {
		const unsigned char *p = (const unsigned char *)data;
		if ((g->cert = d2i_X509(NULL, &p, (long)len)) != NULL)
			n += X509_STORE_add_cert(g->store, g->cert) == 1;
		X509_free(g->cert);
		g->cert = NULL;
	}
	ERR_clear_error();
	return n;
}


/*
** Whether PKCS7_verify gets past PKCS7_dataInit on p7 (the digest BIOs for its md_algs),
** asked first: OpenSSL 3.0's PKCS7_verify copies a memory BIO of content into one of its
** own and loses that copy when PKCS7_dataInit fails (an unknown digest in md_algs).
*/
static int
data_init_ok(PKCS7 *p7, BIO *in)
{
	BIO *b = PKCS7_dataInit(p7, in);
	if (b == NULL)
		return 0;
	while (b != NULL && b != in) {
		BIO *next = BIO_pop(b);
		BIO_free(b);
		b = next;
	}
	return 1;
}


/* A store holding the certificates of argument 3 (a string or a list of strings), as trust anchors. */
static int
trust(lua_State *L, struct sig_guard *g)
{
	int n = 0;
	if ((g->store = X509_STORE_new()) == NULL)
		return luaL_error(L, "not enough memory");
	if (lua_type(L, 3) == LUA_TTABLE) {
		for (lua_Integer i = 1; lua_rawgeti(L, 3, i) != LUA_TNIL; i++) {
			size_t len;
			const char *s = lua_tolstring(L, -1, &len);
			luaL_argcheck(L, s != NULL, 3, "a list of certificates (strings) expected");
			n += add_certs(g, s, len);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	} else {
		size_t len;
		const char *s = luaL_checklstring(L, 3, &len);
		n += add_certs(g, s, len);
	}
	X509_STORE_set_flags(g->store, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_NO_CHECK_TIME);
	X509_STORE_set_purpose(g->store, X509_PURPOSE_ANY);
	return n;
}


/***
Whether a signature of a PE/COFF image verifies against the given certificates.
@function verify
@string root host directory the image is in
@string path image file inside root
@tparam string|{string,...} certs X.509 certificates: PEM (one or more) or DER
@treturn[1] int the index of the first signature that verifies (its digest matches the file
  and its PKCS#7 chains to one of certs)
@treturn[2] boolean false
@treturn[2] string why none does ("unsigned", "the signed digest does not match the file", ...)
@return[3] nil
@treturn[3] string "path: ..." (the file cannot be read or its signatures parsed)
*/
static int
sig_verify(lua_State *L)
{
	struct sig_guard *g = guard_new(L);
	struct sig_walk w;
	int nret, r;
	const char *why = "unsigned";
	if (trust(L, g) == 0)
		return fail(L, "no X.509 certificate in the certificates given");
	if ((nret = walk_open(L, &w, g)) != 0)
		return nret;
	while ((r = walk_next(L, &w)) > 0) {
		if (!w.digest_ok) {
			why = "the signed digest does not match the file";
			continue;
		}
		BIO_free(g->bio);
		if ((g->bio = BIO_new_mem_buf(w.e.content, (int)w.e.content_len)) == NULL)
			return luaL_error(L, "not enough memory");
		if (data_init_ok(g->p7, g->bio) && PKCS7_verify(g->p7, NULL, g->store, g->bio, NULL, PKCS7_BINARY) == 1) {
			vfi_pe_close(w.f);
			lua_pushinteger(L, w.idx);
			return 1;
		}
		why = "not signed by the given certificates";
		ERR_clear_error();
	}
	if (r < 0)
		return -r;
	vfi_pe_close(w.f);
	lua_pushboolean(L, 0);
	lua_pushstring(L, why);
	return 2;
}


/***
One X.509 certificate.
@function cert
@string data PEM (the first certificate) or DER
@treturn[1] table `{subject="/C=../CN=..", issuer=, serial=hex, fingerprint=SHA-256 hex of the DER}`
@return[2] nil
@treturn[2] string "not an X.509 certificate"
*/
static int
sig_cert(lua_State *L)
{
	size_t len;
	const char *data = luaL_checklstring(L, 1, &len);
	struct sig_guard *g = guard_new(L);
	const unsigned char *p = (const unsigned char *)data;
	if ((g->bio = BIO_new_mem_buf(data, (int)len)) == NULL)
		return luaL_error(L, "not enough memory");
	if ((g->cert = PEM_read_bio_X509(g->bio, NULL, NULL, NULL)) == NULL
	    && (g->cert = d2i_X509(NULL, &p, (long)len)) == NULL)
		return fail(L, "not an X.509 certificate");
	push_cert(L, g->cert);
	ERR_clear_error();
	return 1;
}


void
sig_open(lua_State *L)
{
	vfi_class(L, SIG_GUARD, guard_gc, NULL);
	vfi_export(L, "sig", "cert", sig_cert);
	vfi_export(L, "sig", "read", sig_read);
	vfi_export(L, "sig", "verify", sig_verify);
	blake2b_open(L);
}


__attribute__((visibility("default"))) int
luaopen_vfioinit_core_sig(lua_State *L)
{
	return vfi_open_part(L, "sig", sig_open);
}
