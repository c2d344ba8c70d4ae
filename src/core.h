/*
** vfioinit.core: thin C primitives under the Lua policy in lua/vfioinit/.
** The module is a table of sub-tables, one per concern: core.fs (fs.c),
** core.hash (hash.c), core.image (image.c), core.kmod (kmod.c), core.lock
** (lock.c), core.scan (shell.c, yaml.c), core.spawn (spawn.c), core.re (re.c), core.sig (sig.c). Each file adds
** its own with <concern>_open(L) on the module table on top of the stack. kmod.c and
** re.c are modules of their own (vfioinit.core.kmod, vfioinit.core.re: libkmod and
** libpcre2 are mapped only by a process that uses them), loaded on first use of
** core.kmod / core.re.
** Every path argument is a path inside a `root` argument, and errors name it
** as seen inside root. Expected failures push `nil, "what: strerror", errno`;
** misuse raises.
*/
#ifndef VFIOINIT_CORE_H
#define VFIOINIT_CORE_H

#include <sys/types.h>

#include <lua.h>
#include <lauxlib.h>

#include "compat.h"

#define VFIOINIT_CORE_VERSION "0.1.0"

/* ---- util.c: shared helpers ---- */

/* Push nil, "<what>: <strerror(err)>", err and return 3 (luaL_fileresult's shape). */
int vfi_push_errno(lua_State *L, const char *what, int err);
/* Seconds on the monotonic clock. */
double vfi_now(void);
/* What a file type is, in words: "fifo", "character device", "directory", ... */
const char *vfi_kind_of(mode_t mode);
/* Set `concern`.`name` = fn in the module table on top of the stack (the sub-table created when missing). */
void vfi_export(lua_State *L, const char *concern, const char *name, lua_CFunction fn);
/* Create metatable `tname`: `gc` as __gc and __close, `methods` (when not NULL) as __index. */
void vfi_class(lua_State *L, const char *tname, lua_CFunction gc, const luaL_Reg *methods);
/*
** The luaopen_ of a part of core in its own module (vfioinit.core.kmod, vfioinit.core.re):
** runs `open` on a stand-in module table and returns its `concern` sub-table, which
** src/core.c's core.<concern> then is. 1 (the sub-table pushed).
*/
int vfi_open_part(lua_State *L, const char *concern, void (*open)(lua_State *L));

/* ---- fs.c: the root-confined opens the other files read root through ---- */

/*
** Open a regular file inside root for reading (never blocks on a FIFO,
** refuses devices and sockets). 0 and *fd, or pushes nil, msg, errno -> 3.
*/
struct stat;
int vfi_open_regular(lua_State *L, const char *root, const char *path, int *fd, struct stat *st);
/* Open a directory inside root for reading. 0 or errno. */
int vfi_open_dir(lua_State *L, const char *root, const char *path, int *fd);
/* Argument n: a root (non-empty host dir, no NUL) / an absolute path inside root (no NUL). Raise otherwise. */
const char *vfi_checkroot(lua_State *L, int n);
const char *vfi_checkpath(lua_State *L, int n);

/* ---- pehdr.c: a PE/COFF image's headers, for pe.c and sig.c ---- */

#include <stdint.h>

#define VFI_PE_FILE "vfioinit.PeFile"
#define VFI_PE_MAX_SECTIONS 96	/* the Windows loader's limit; EFI firmware uses the same table */

struct vfi_pe_section {
	char name[9];	/* NUL-padded in the file; a "/N" long name is returned as stored */
	uint64_t offset;	/* PointerToRawData */
	uint64_t size;	/* the data: the smaller of VirtualSize and SizeOfRawData (0: raw size) */
	uint64_t rawsize;	/* SizeOfRawData: what the Authenticode digest covers */
	uint64_t rva;	/* VirtualAddress: where the loader maps it, from ImageBase */
};

/* An open image; a userdata so a Lua error (out of memory) still closes it. */
struct vfi_pe {
	int fd;
	uint64_t size;
	int n;
	struct vfi_pe_section sec[VFI_PE_MAX_SECTIONS];
	uint64_t image_base;	/* the optional header's ImageBase (0 when it has none) */
	/* from the optional header; valid only when opt_why is NULL */
	const char *opt_why;	/* why the fields below are missing */
	uint64_t cksum_off, certdir_off, hdr_size;	/* CheckSum, data directory [4], SizeOfHeaders */
	uint32_t cert_off, cert_size;	/* the certificate table: a file offset, not an RVA */
};

/*
** Open path inside root and parse its headers into a new userdata (left on the stack;
** closed by __gc/__close or vfi_pe_close). 0, or pushes nil, msg (2) / nil, msg, errno (3).
*/
int vfi_pe_load(lua_State *L, const char *root, const char *path, struct vfi_pe **out);
void vfi_pe_close(struct vfi_pe *f);
/* Read exactly n bytes at off. 0, or errno (EIO for a short read: the file shrank). */
int vfi_pe_pread(struct vfi_pe *f, void *buf, size_t n, uint64_t off);
uint32_t vfi_rd32(const unsigned char *p);

void fs_open(lua_State *L);
void hash_open(lua_State *L);
void moddep_open(lua_State *L);
void image_open(lua_State *L);
void pe_open(lua_State *L);
void kmod_open(lua_State *L);
void lock_open(lua_State *L);
void shell_open(lua_State *L);
void yaml_open(lua_State *L);
void spawn_open(lua_State *L);
void re_open(lua_State *L);
void sig_open(lua_State *L);
/* blake2b.c: core.sig.blake2b, in the same module (libcrypto). */
void blake2b_open(lua_State *L);

#endif
