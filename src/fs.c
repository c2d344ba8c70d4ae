/*
** fs.c: root-confined file I/O. Every path is absolute inside `root` (a host
** directory); symlinks resolve inside root: openat2(RESOLVE_IN_ROOT) where the
** kernel has it, our own component walk where it does not. Operations on a
** final component (rename, remove, the temp+rename of write_atomic) act on a
** parent directory fd obtained the same confined way, so nothing outside root
** is ever read or written. Errors: nil, "<path as given>: strerror", errno;
** the host root prefix never appears in a message.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "core.h"

#define FALLBACK_KEY "vfioinit.fs.fallback"  /* registry: force the walker */
#define HELD_KEY "vfioinit.fs.held"          /* registry: root -> struct held, while held */
#define HOLD_T "vfioinit.FsHold"
#define MAXLINKS 40                          /* like the kernel's ELOOP limit */
#define COPY_CHUNK (1 << 16)

/*
** Fault injection for hardening specs, compiled only with -DVFIOINIT_TESTING=ON
** (tools/test): VFIOINIT_FAULT="write:N,fsync:N,rename:N,cfr:N" makes the Nth
** such call of one operation fail (ENOSPC for write, EIO for fsync/rename,
** ENOSYS for copy_file_range so copy takes its read/write loop). A release
** build never reads it: an environment variable must not be able to make an
** installed vfioinit fail a write. Counters live in the per-call context: no
** C globals.
*/
struct fault {
	int at;   /* 0: off */
	int seen;
};

struct fsctx {
	int rootfd;
	int borrowed;  /* rootfd is a held root's (core.fs.hold): not ours to close */
	int fallback;
	struct fault fwrite, ffsync, frename, fcfr;
};


#ifdef VFIOINIT_TESTING
static int
fault_hit(struct fault *f)
{
	return f->at > 0 && ++f->seen == f->at;
}


static void
fault_parse(struct fsctx *c)
{
	const char *env = getenv("VFIOINIT_FAULT");
	static const struct { const char *name; size_t off; } ops[] = {
		{"write", offsetof(struct fsctx, fwrite)},
		{"fsync", offsetof(struct fsctx, ffsync)},
		{"rename", offsetof(struct fsctx, frename)},
		{"cfr", offsetof(struct fsctx, fcfr)},  /* copy_file_range "unsupported" */
	};
	size_t i;
	if (env == NULL)
		return;
	for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		size_t n = strlen(ops[i].name);
		const char *p = env;
		while ((p = strstr(p, ops[i].name)) != NULL) {
			if ((p == env || p[-1] == ',') && p[n] == ':') {
				struct fault *f = (struct fault *)((char *)c + ops[i].off);
				f->at = atoi(p + n + 1);
				break;
			}
			p += n;
		}
	}
}


/* VFIOINIT_FS_FALLBACK=1 or core.fs._force_fallback(true): use the walker. */
static int
force_fallback(lua_State *L)
{
	const char *env = getenv("VFIOINIT_FS_FALLBACK");
	int on;
	lua_getfield(L, LUA_REGISTRYINDEX, FALLBACK_KEY);
	on = lua_toboolean(L, -1) || (env != NULL && *env != '\0' && strcmp(env, "0") != 0);
	lua_pop(L, 1);
	return on;
}
#else
#define fault_hit(f)		((void)(f), 0)
#define fault_parse(c)		((void)(c))
#define force_fallback(L)	((void)(L), 0)
#endif


/* A root held open by core.fs.hold: its fd and how many holds share it. */
struct held {
	int fd;
	int refs;
};


/* The held entry of root (registry HELD_KEY[root]), or NULL. Leaves the stack as it was. */
static struct held *
held_get(lua_State *L, const char *root)
{
	struct held *h = NULL;
	if (lua_getfield(L, LUA_REGISTRYINDEX, HELD_KEY) == LUA_TTABLE) {
		lua_getfield(L, -1, root);
		h = (struct held *)lua_touserdata(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return h;
}


/* Open root (or borrow its held fd) and read the settings of this call. Returns 0 or errno. */
static int
ctx_open(lua_State *L, struct fsctx *c, const char *root)
{
	struct held *h;
	memset(c, 0, sizeof *c);
	c->fallback = force_fallback(L);
	fault_parse(c);
	if ((h = held_get(L, root)) != NULL) {
		c->rootfd = h->fd;
		c->borrowed = 1;
		return 0;
	}
	c->rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return c->rootfd < 0 ? errno : 0;
}


static void
ctx_close(struct fsctx *c)
{
	if (c->rootfd >= 0 && !c->borrowed)
		close(c->rootfd);
	c->rootfd = -1;
}


static void
close_keep_errno(int fd)
{
	int e = errno;
	if (fd >= 0)
		close(fd);
	errno = e;
}


/*
** Open a path made only of already resolved directories ("" or "/a/b"),
** refusing to follow anything: a symlink swapped in meanwhile gives ENOTDIR.
*/
static int
open_canon(int rootfd, const char *canon, int *out)
{
	char name[NAME_MAX + 1];
	int cur = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	const char *p = canon;
	if (cur < 0)
		return errno;
	for (;;) {
		size_t n;
		int fd;
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, "/");
		if (n > NAME_MAX) {
			close(cur);
			return ENAMETOOLONG;
		}
		memcpy(name, p, n);
		name[n] = '\0';
		p += n;
		fd = openat(cur, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close_keep_errno(cur);
		if (fd < 0)
			return errno;
		cur = fd;
	}
	*out = cur;
	return 0;
}


/*
** The fallback resolver: walk `path` one component at a time from root with
** O_PATH|O_NOFOLLOW, splicing symlink targets into the rest of the path (an
** absolute target restarts at root, ".." stops at root). Writes the resolved
** path inside root to canon ("/" for root). With `missing` non-NULL a missing
** last component is allowed (*missing = 1), like realpath(1).
*/
struct walker {
	int rootfd;
	int cur;		/* O_PATH fd of canon; -1 after a failed reopen */
	int links;		/* symlinks followed so far */
	size_t clen;
	char *canon;		/* the resolved prefix (PATH_MAX) */
	char rest[PATH_MAX];	/* what is left to walk */
	const char *p;		/* the next component, in rest */
};


/* "..": drop the last resolved component and reopen the shorter prefix (never trust ".."). */
static int
walk_up(struct walker *w)
{
	if (w->clen == 0)
		return 0;  /* ".." of root is root */
	while (w->clen > 0 && w->canon[w->clen - 1] != '/')
		w->clen--;
	if (w->clen > 0)
		w->clen--;
	w->canon[w->clen] = '\0';
	close(w->cur);
	w->cur = -1;
	return open_canon(w->rootfd, w->canon, &w->cur);
}


/* Symlink `fd` (its component ends at e): splice its target before the rest. Consumes fd. */
static int
walk_link(struct walker *w, int fd, const char *e)
{
	char link[PATH_MAX], tmp[PATH_MAX];
	ssize_t len;
	if (++w->links > MAXLINKS) {
		close(fd);
		return ELOOP;
	}
	len = readlinkat(fd, "", link, sizeof link);
	close_keep_errno(fd);
	if (len < 0)
		return errno;
	if (len == 0)  /* empty target: nothing to follow */
		return ENOENT;
	/* no "/" added after a last component */
	if ((size_t)len >= sizeof link
	    || (size_t)snprintf(tmp, sizeof tmp, "%.*s%s", (int)len, link, e) >= sizeof tmp)
		return ENAMETOOLONG;
	strcpy(w->rest, tmp);
	w->p = w->rest;
	if (link[0] == '/') {  /* absolute: start again at root */
		w->clen = 0;
		w->canon[0] = '\0';
		close(w->cur);
		if ((w->cur = openat(w->rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
			return errno;
	}
	return 0;
}


static int
walk_append(struct walker *w, const char *name, size_t n)
{
	if (w->clen + 1 + n >= PATH_MAX)
		return ENAMETOOLONG;
	w->canon[w->clen++] = '/';
	memcpy(w->canon + w->clen, name, n + 1);
	w->clen += n;
	return 0;
}


/* One component `name` (ending at e): descend into a dir, follow a link, or end on the last one. */
static int
walk_step(struct walker *w, const char *name, size_t n, const char *e, int follow_last, int *missing)
{
	struct stat st;
	int last = *e == '\0', err;
	int fd = openat(w->cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT && last && missing != NULL) {
			*missing = 1;
			return walk_append(w, name, n);
		}
		return errno;
	}
	if (fstat(fd, &st) < 0) {
		err = errno;
		close(fd);
		return err;
	}
	if (S_ISLNK(st.st_mode) && (!last || follow_last))
		return walk_link(w, fd, e);
	if (!S_ISDIR(st.st_mode) && !last) {
		close(fd);
		return ENOTDIR;
	}
	close(w->cur);
	w->cur = fd;
	w->p = e;
	return walk_append(w, name, n);
}


static int
walk(int rootfd, const char *path, int follow_last, char canon[PATH_MAX], int *missing)
{
	struct walker w;
	char name[NAME_MAX + 1];
	int err = 0;

	if (missing != NULL)
		*missing = 0;
	if (strlen(path) >= sizeof w.rest)
		return ENAMETOOLONG;
	strcpy(w.rest, path);
	w.rootfd = rootfd;
	w.links = 0;
	w.clen = 0;
	w.canon = canon;
	w.p = w.rest;
	canon[0] = '\0';
	if ((w.cur = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		return errno;
	while (err == 0 && (missing == NULL || !*missing)) {
		const char *e;
		size_t n;
		while (*w.p == '/')
			w.p++;
		if (*w.p == '\0')
			break;
		n = strcspn(w.p, "/");
		e = w.p + n;
		if (n == 1 && w.p[0] == '.') {
			w.p = e;
		} else if (n == 2 && w.p[0] == '.' && w.p[1] == '.') {
			w.p = e;
			err = walk_up(&w);
		} else if (n > NAME_MAX) {
			err = ENAMETOOLONG;
		} else {
			memcpy(name, w.p, n);
			name[n] = '\0';
			err = walk_step(&w, name, n, e, follow_last, missing);
		}
	}
	if (w.cur >= 0)
		close(w.cur);
	if (err == 0 && w.clen == 0)
		strcpy(canon, "/");
	return err;
}


/* Fallback for confined_open: walk, then open the last name with O_NOFOLLOW. */
static int
walk_open(struct fsctx *c, const char *path, int flags, int *out)
{
	char canon[PATH_MAX];
	char *slash;
	int err, dirfd, fd;

	if ((err = walk(c->rootfd, path, !(flags & O_NOFOLLOW), canon, NULL)) != 0)
		return err;
	if (strcmp(canon, "/") == 0) {
		fd = openat(c->rootfd, ".", (flags & ~O_NOFOLLOW) | O_CLOEXEC);
		if (fd < 0)
			return errno;
		*out = fd;
		return 0;
	}
	slash = strrchr(canon, '/');
	*slash = '\0';
	if ((err = open_canon(c->rootfd, canon, &dirfd)) != 0)
		return err;
	/* The walk left no symlink to follow; O_NOFOLLOW catches a race. */
	fd = openat(dirfd, slash + 1, flags | O_NOFOLLOW | O_CLOEXEC);
	close_keep_errno(dirfd);
	if (fd < 0)
		return errno;
	*out = fd;
	return 0;
}


/*
** Open `path` (absolute, inside root) with `flags` (no O_CREAT). Returns 0
** and the fd in *out, or errno.
*/
static int
confined_open(struct fsctx *c, const char *path, int flags, int *out)
{
	const char *rel = path;
	int tries;

	while (*rel == '/')
		rel++;
	if (*rel == '\0')
		rel = ".";
	if (!c->fallback) {
		struct open_how how;
		memset(&how, 0, sizeof how);
		how.flags = (uint64_t)(flags | O_CLOEXEC);
		how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
		for (tries = 0; tries < 16; tries++) {
			long fd = syscall(SYS_openat2, c->rootfd, rel, &how, sizeof how);
			if (fd >= 0) {
				*out = (int)fd;
				return 0;
			}
			if (errno != EAGAIN && errno != EINTR)  /* EAGAIN: a rename raced ".." */
				break;
		}
		/* ENOSYS: old kernel; EPERM: a seccomp filter that does not know it. */
		if (errno != ENOSYS && errno != EPERM)
			return errno;
	}
	return walk_open(c, path, flags, out);
}


/* Is `path` (inside root, O_PATH) there with no symlink on the way? 0, or errno. */
static int
open_plain(struct fsctx *c, const char *path)
{
	struct open_how how;
	long fd;
	while (*path == '/')
		path++;
	memset(&how, 0, sizeof how);
	how.flags = O_PATH | O_CLOEXEC;
	how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS;
	fd = syscall(SYS_openat2, c->rootfd, *path ? path : ".", &how, sizeof how);
	if (fd < 0)
		return errno;
	close((int)fd);
	return 0;
}


/*
** resolve's quick answer, when no symlink is on the way (one openat2 instead of a
** walk, which opens and stats every component): `path` without "." components,
** ".." taken back (at root it stays at root, as the walk does). A missing last
** component is allowed when its parent is there (the walk's rule), and a missing
** parent is ENOENT (the walk meets the same missing name first). 0, or errno; -1 for
** a path with "." or ".." components, any symlink, or no openat2: the walk answers.
*/
static int
resolve_plain(struct fsctx *c, const char *path, char canon[PATH_MAX])
{
	size_t clen = 0, plen = strlen(path);
	const char *p = path;
	int dots = 0, err;
	if (c->fallback || plen >= PATH_MAX)
		return -1;
	while (*p != '\0') {
		size_t n;
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, "/");
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
			dots = 1;
			if (n == 2) {
				while (clen > 0 && canon[clen - 1] != '/')
					clen--;
				if (clen > 0)
					clen--;
			}
		} else {
			canon[clen++] = '/';
			memcpy(canon + clen, p, n);
			clen += n;
		}
		p += n;
	}
	canon[clen] = '\0';
	if (clen == 0)
		strcpy(canon, "/");
	err = open_plain(c, path);
	if (err == ENOENT && !dots && clen > 0) {
		/* the last name missing, its parent there (without symlinks): the walk's answer too */
		char parent[PATH_MAX];
		char *slash = strrchr(canon, '/');
		memcpy(parent, canon, (size_t)(slash - canon));
		parent[slash - canon] = '\0';
		err = open_plain(c, parent[0] ? parent : "/");
		if (err == 0 || err == ENOENT)
			return err;
	}
	return err == 0 ? 0 : -1;
}


/* Split off the last component: *dir gets the parent path, name the last name. */
static int
split_path(const char *path, char dir[PATH_MAX], char name[NAME_MAX + 1])
{
	size_t len = strlen(path), i;
	while (len > 0 && path[len - 1] == '/')
		len--;
	i = len;
	while (i > 0 && path[i - 1] != '/')
		i--;
	if (len - i > NAME_MAX || i >= PATH_MAX)
		return ENAMETOOLONG;
	memcpy(name, path + i, len - i);
	name[len - i] = '\0';
	if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return EINVAL;  /* "/", "x/.", "x/..": no single entry to act on */
	memcpy(dir, path, i);
	dir[i] = '\0';
	if (i == 0)
		strcpy(dir, "/");
	return 0;
}


/* The parent directory of `path` (resolved inside root) as an O_PATH fd, and its last name. */
static int
parent_open(struct fsctx *c, const char *path, int *dirfd, char name[NAME_MAX + 1])
{
	char dir[PATH_MAX];
	int err = split_path(path, dir, name);
	if (err != 0)
		return err;
	return confined_open(c, dir, O_PATH | O_DIRECTORY, dirfd);
}


/*
** The directory and name write_atomic and copy replace: a final symlink is
** followed (inside root) so the link stays and the file it names is updated.
*/
static int
target_open(struct fsctx *c, const char *path, int *dirfd, char name[NAME_MAX + 1])
{
	char cur[PATH_MAX], link[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX];
	int links = 0, err;

	name[0] = '\0';
	*dirfd = -1;
	if (strlen(path) >= sizeof cur)
		return ENAMETOOLONG;
	strcpy(cur, path);
	for (;;) {
		struct stat st;
		ssize_t len;
		if ((err = parent_open(c, cur, dirfd, name)) != 0)
			return err;
		if (fstatat(*dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISLNK(st.st_mode))
			return 0;
		len = readlinkat(*dirfd, name, link, sizeof link);
		err = len < 0 ? errno : 0;
		close(*dirfd);
		*dirfd = -1;
		if (err != 0)
			return err;
		if (++links > MAXLINKS)
			return ELOOP;
		if ((size_t)len >= sizeof link)
			return ENAMETOOLONG;
		link[len] = '\0';
		if (link[0] == '/') {
			strcpy(cur, link);
			continue;
		}
		split_path(cur, dir, tmp);  /* succeeded in parent_open above */
		if ((size_t)snprintf(tmp, sizeof tmp, "%s/%s", dir, link) >= sizeof tmp)
			return ENAMETOOLONG;
		strcpy(cur, tmp);
	}
}


/* Create ".<name>.vfioinit-XXXXXX" next to name, exclusively. */
static int
temp_create(int dirfd, const char *name, char tmp[NAME_MAX + 1], int *fd)
{
	static const char abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	int tries;
	size_t n;

	n = (size_t)snprintf(tmp, NAME_MAX + 1, ".%s.vfioinit-XXXXXX", name);
	if (n > NAME_MAX)
		return ENAMETOOLONG;
	for (tries = 0; tries < 100; tries++) {
		unsigned char rnd[6];
		size_t i;
		if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
			struct timespec ts;
			unsigned long x;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			x = (unsigned long)ts.tv_nsec ^ ((unsigned long)getpid() << 16) ^ (unsigned long)tries * 2654435761u;
			for (i = 0; i < sizeof rnd; i++, x >>= 5)
				rnd[i] = (unsigned char)x;
		}
		for (i = 0; i < sizeof rnd; i++)
			tmp[n - 6 + i] = abc[rnd[i] % (sizeof abc - 1)];
		*fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (*fd >= 0)
			return 0;
		if (errno != EEXIST)
			return errno;
	}
	return EEXIST;
}


static int
write_all(struct fsctx *c, int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n;
		if (fault_hit(&c->fwrite))
			return ENOSPC;
		n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}


/* fsync a directory we only hold an O_PATH fd of. */
static int
fsync_dir(struct fsctx *c, int dirfd)
{
	int fd, err = 0;
	if (fault_hit(&c->ffsync))
		return EIO;
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	if (fsync(fd) < 0 && errno != EINVAL)  /* EINVAL: the fs cannot sync dirs */
		err = errno;
	close(fd);
	return err;
}


/*
** Finish a temp file: owner (when asked) and mode, fsync, close, rename over
** name, fsync the dir. Always consumes fd; on failure the temp is removed and
** name untouched (up to the rename).
*/
static int
temp_commit(struct fsctx *c, int dirfd, int fd, const char *tmp, const char *name,
            const struct stat *owner, mode_t mode)
{
	int err = 0;
	if (owner != NULL && fchown(fd, owner->st_uid, owner->st_gid) < 0)
		err = errno;
	if (err == 0 && fchmod(fd, mode) < 0)  /* after fchown: it clears set-id bits */
		err = errno;
	if (err == 0 && fault_hit(&c->ffsync))
		err = EIO;
	if (err == 0 && fsync(fd) < 0)
		err = errno;
	if (close(fd) < 0 && err == 0)
		err = errno;
	if (err == 0 && fault_hit(&c->frename))
		err = EIO;
	if (err == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		err = errno;
	if (err != 0) {
		unlinkat(dirfd, tmp, 0);
		return err;
	}
	return fsync_dir(c, dirfd);
}


static int
push_stat(lua_State *L, const struct stat *st)
{
	const char *type = S_ISREG(st->st_mode) ? "file" : S_ISDIR(st->st_mode) ? "dir"
	                 : S_ISLNK(st->st_mode) ? "link" : "other";
	lua_createtable(L, 0, 13);
	lua_pushstring(L, type);
	lua_setfield(L, -2, "type");
	if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode)) {
		lua_pushstring(L, vfi_kind_of(st->st_mode));  /* what "other" is: "fifo", ... */
		lua_setfield(L, -2, "kind");
	}
	lua_pushinteger(L, st->st_mode & 07777);
	lua_setfield(L, -2, "mode");
	lua_pushinteger(L, st->st_uid);
	lua_setfield(L, -2, "uid");
	lua_pushinteger(L, st->st_gid);
	lua_setfield(L, -2, "gid");
	lua_pushinteger(L, (lua_Integer)st->st_size);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_sec);
	lua_setfield(L, -2, "mtime");
	lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_nsec);
	lua_setfield(L, -2, "mtime_ns");
	/* what an image fingerprint compares (lua/vfioinit/fingerprint.lua): the change time
	** moves on every write and nobody can set it back, so a rewrite that restores mtime
	** still shows; device and inode tell a file replaced by rename */
	lua_pushinteger(L, (lua_Integer)st->st_ctim.tv_sec);
	lua_setfield(L, -2, "ctime");
	lua_pushinteger(L, (lua_Integer)st->st_ctim.tv_nsec);
	lua_setfield(L, -2, "ctime_ns");
	lua_pushinteger(L, (lua_Integer)st->st_dev);
	lua_setfield(L, -2, "dev");
	lua_pushinteger(L, (lua_Integer)st->st_ino);
	lua_setfield(L, -2, "ino");
	return 1;
}


/* Argument n: an absolute path inside root, without NULs. */
const char *
vfi_checkpath(lua_State *L, int n)
{
	size_t len;
	const char *p = luaL_checklstring(L, n, &len);
	luaL_argcheck(L, strlen(p) == len, n, "path contains a NUL byte");
	luaL_argcheck(L, p[0] == '/', n, "absolute path expected");
	return p;
}


const char *
vfi_checkroot(lua_State *L, int n)
{
	size_t len;
	const char *p = luaL_checklstring(L, n, &len);
	luaL_argcheck(L, strlen(p) == len && len > 0, n, "non-empty path without NUL expected");
	return p;
}


static int
fail(lua_State *L, struct fsctx *c, const char *what, int err)
{
	ctx_close(c);
	return vfi_push_errno(L, what, err);
}


/* Success of an operation: close the context, push true. */
static int
done(lua_State *L, struct fsctx *c)
{
	ctx_close(c);
	lua_pushboolean(L, 1);
	return 1;
}


/*
** 0 when `mode` is a regular file's; else push "PATH: Is a directory" or
** "PATH: not a regular file (fifo)" (likewise devices, sockets) -> 3.
*/
static int
refuse_irregular(lua_State *L, struct fsctx *c, const char *path, mode_t mode)
{
	if (S_ISREG(mode))
		return 0;
	if (S_ISDIR(mode))
		return fail(L, c, path, EISDIR);
	ctx_close(c);
	lua_pushnil(L);
	lua_pushfstring(L, "%s: not a regular file (%s)", path, vfi_kind_of(mode));
	lua_pushinteger(L, EINVAL);
	return 3;
}


/*
** Open `path` for reading only when it is a regular file: the open is
** O_NONBLOCK so a FIFO cannot block it (O_NOCTTY: a tty does not become
** ours), then fstat refuses anything but a regular file. 0 with *fd and *st,
** or the values pushed (context closed).
*/
static int
open_regular(lua_State *L, struct fsctx *c, const char *path, int *fd, struct stat *st)
{
	int err;
	*fd = -1;
	memset(st, 0, sizeof *st);  /* defined on every path (the analyzer cannot tell fail() > 0) */
	if ((err = confined_open(c, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, fd)) != 0)
		return fail(L, c, path, err);
	if (fstat(*fd, st) < 0) {
		err = errno;
		close(*fd);
		*fd = -1;
		return fail(L, c, path, err);
	}
	if (!S_ISREG(st->st_mode)) {
		close(*fd);
		*fd = -1;
		return refuse_irregular(L, c, path, st->st_mode);
	}
	return 0;
}


/*
** Open `path` inside `root` for reading, only when it is a regular file
** (open_regular), with O_NONBLOCK cleared again. Returns 0 with *fd (and
** *st), or pushes nil, "PATH: reason", errno and returns 3. Shared with
** kmod.c and image.c.
*/
int
vfi_open_regular(lua_State *L, const char *root, const char *path, int *fd, struct stat *st)
{
	struct fsctx c;
	int err, flags;

	*fd = -1;
	memset(st, 0, sizeof *st);
	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = open_regular(L, &c, path, fd, st)) != 0)
		return err;
	ctx_close(&c);
	if ((flags = fcntl(*fd, F_GETFL)) >= 0)
		fcntl(*fd, F_SETFL, flags & ~O_NONBLOCK);
	return 0;
}


/* Open a directory inside root for reading (fdopendir). Returns 0 or errno. */
int
vfi_open_dir(lua_State *L, const char *root, const char *path, int *fd)
{
	struct fsctx c;
	int err;
	if ((err = ctx_open(L, &c, root)) != 0) {
		ctx_close(&c);
		return err;
	}
	err = confined_open(&c, path, O_RDONLY | O_DIRECTORY, fd);
	ctx_close(&c);
	return err;
}


#ifdef VFIOINIT_TESTING
/***
Force the fallback path walker instead of openat2 (for specs only).
@function _force_fallback
@tparam boolean on
*/
static int
fs__force_fallback(lua_State *L)
{
	luaL_checkany(L, 1);
	lua_pushboolean(L, lua_toboolean(L, 1));
	lua_setfield(L, LUA_REGISTRYINDEX, FALLBACK_KEY);
	return 0;
}
#endif


/*
** The replacement of a file being written (write_atomic, copy): the directory
** of its target (a final symlink followed), the current file, and the temp
** file next to it that will be renamed over it.
*/
struct target {
	int dirfd;
	int fd;			/* the temp file */
	int exists;		/* st describes the current file */
	struct stat st;
	char name[NAME_MAX + 1];
	char tmp[NAME_MAX + 1];
};


/* Open the target of `path` and create its temp file. 0, or the values pushed. */
static int
target_begin(lua_State *L, struct fsctx *c, const char *path, struct target *t)
{
	int err;
	memset(t, 0, sizeof *t);  /* defined on every path (the analyzer cannot tell fail() > 0) */
	t->fd = -1;
	if ((err = target_open(c, path, &t->dirfd, t->name)) != 0)
		return fail(L, c, path, err);
	t->exists = fstatat(t->dirfd, t->name, &t->st, AT_SYMLINK_NOFOLLOW) == 0;
	err = !t->exists && errno != ENOENT ? errno : 0;
	if (err == 0 && t->exists && !S_ISREG(t->st.st_mode)) {
		close(t->dirfd);
		return refuse_irregular(L, c, path, t->st.st_mode);
	}
	if (err == 0)
		err = temp_create(t->dirfd, t->name, t->tmp, &t->fd);
	if (err != 0) {
		close(t->dirfd);
		return fail(L, c, path, err);
	}
	return 0;
}


/*
** After the data went into the temp file (err == 0): commit it with owner and
** mode; on err the temp file is removed. Pushes true or the error.
*/
static int
target_end(lua_State *L, struct fsctx *c, const char *path, struct target *t, int err,
           const struct stat *owner, mode_t mode)
{
	if (err != 0) {
		close(t->fd);
		unlinkat(t->dirfd, t->tmp, 0);
	} else {
		err = temp_commit(c, t->dirfd, t->fd, t->tmp, t->name, owner, mode);
	}
	close(t->dirfd);
	if (err != 0)
		return fail(L, c, path, err);
	return done(L, c);
}


/* copy_file_range cannot serve these files (other fs, old kernel, ...): copy_rw instead. */
static int
cfr_unsupported(int err)
{
	return err == EXDEV || err == ENOSYS || err == EINVAL || err == EOPNOTSUPP || err == EBADF;
}


/* Copy in to out through the kernel. 0, errno, or -1: unsupported (nothing copied). */
static int
copy_range(struct fsctx *c, int in, int out)
{
	for (;;) {
		ssize_t n;
		if (fault_hit(&c->fwrite))
			return ENOSPC;
		if (fault_hit(&c->fcfr)) {
			n = -1;
			errno = ENOSYS;
		} else {
			n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		}
		if (n < 0 && cfr_unsupported(errno))
			return -1;
		if (n < 0 && errno != EINTR)
			return errno;
		if (n == 0)
			return 0;
	}
}


/* Copy in to out with read and write, from the start of both. 0 or errno. */
static int
copy_rw(struct fsctx *c, int in, int out)
{
	char *buf;
	int err = 0;
	if (lseek(in, 0, SEEK_SET) < 0 || lseek(out, 0, SEEK_SET) < 0 || ftruncate(out, 0) < 0)
		return errno;
	if ((buf = malloc(COPY_CHUNK)) == NULL)
		return ENOMEM;
	for (;;) {
		ssize_t n = read(in, buf, COPY_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? errno : 0;
			break;
		}
		if ((err = write_all(c, out, buf, (size_t)n)) != 0)
			break;
	}
	free(buf);
	return err;
}


/***
Atomic copy of a regular file (temp + rename), keeping its mode.
@function copy
@treturn[1] true
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_copy(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *from = vfi_checkpath(L, 2);
	const char *to = vfi_checkpath(L, 3);
	struct fsctx c;
	struct target t;
	struct stat st;
	int err, in;

	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = open_regular(L, &c, from, &in, &st)) != 0)
		return err;
	if ((err = target_begin(L, &c, to, &t)) != 0) {
		close(in);
		return err;
	}
	err = copy_range(&c, in, t.fd);
	if (err < 0)
		err = copy_rw(&c, in, t.fd);
	close(in);
	return target_end(L, &c, to, &t, err, NULL, st.st_mode & 07777);
}


/* Sort helper for fs_dir: entries are C strings owned by a Lua table on the stack. */
static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}


/***
Names in a directory, sorted (strcmp order), without "." and "..".
@function dir
@treturn[1] {string,...}
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_dir(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	struct fsctx c;
	const char **names;
	/* getdents64 rather than fdopendir: glibc's fdopendir fstat()s the descriptor O_DIRECTORY
	 * has already proved a directory, a system call on every listing of every run. */
	union { struct dirent64 de; char b[8192]; } buf;
	ssize_t got, off;
	lua_Integer n = 0, i;
	int err, fd;

	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = confined_open(&c, path, O_RDONLY | O_DIRECTORY, &fd)) != 0)
		return fail(L, &c, path, err);
	ctx_close(&c);
	lua_newtable(L);
	while ((got = getdents64(fd, buf.b, sizeof buf.b)) > 0) {
		for (off = 0; off < got;) {
			const struct dirent64 *de = (const struct dirent64 *)(buf.b + off);
			off += de->d_reclen;
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			lua_pushstring(L, de->d_name);
			lua_rawseti(L, -2, ++n);
		}
	}
	err = got < 0 ? errno : 0;
	close(fd);
	if (err != 0)
		return vfi_push_errno(L, path, err);
	/* Sort pointers into the strings the table keeps alive. */
	names = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *names, 0);
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, -2, i);
		names[i - 1] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	qsort(names, (size_t)n, sizeof *names, cmp_names);
	lua_createtable(L, (int)n, 0);
	for (i = 1; i <= n; i++) {
		lua_pushstring(L, names[i - 1]);
		lua_rawseti(L, -2, i);
	}
	return 1;
}


/***
Create a directory and its missing parents (mkdir -p), inside root.
@function mkdirs
@tparam[opt=0755] int mode
@treturn[1] true
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_mkdirs(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	lua_Integer mode = luaL_optinteger(L, 3, 0755);
	char prefix[PATH_MAX], name[NAME_MAX + 1];
	struct fsctx c;
	size_t len = strlen(path), i = 0;
	int err, fd;

	luaL_argcheck(L, mode >= 0 && mode <= 07777, 3, "mode out of range");
	if (len >= sizeof prefix)
		return vfi_push_errno(L, path, ENAMETOOLONG);
	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	while (i < len) {
		while (i < len && path[i] == '/')
			i++;
		while (i < len && path[i] != '/')
			i++;
		memcpy(prefix, path, i);
		prefix[i] = '\0';
		err = confined_open(&c, prefix, O_PATH | O_DIRECTORY, &fd);
		if (err == ENOENT) {
			int dirfd;
			if ((err = parent_open(&c, prefix, &dirfd, name)) != 0)
				return fail(L, &c, path, err);
			err = mkdirat(dirfd, name, (mode_t)mode) < 0 ? errno : 0;
			close(dirfd);
			if (err != 0 && err != EEXIST)
				return fail(L, &c, path, err);
			err = confined_open(&c, prefix, O_PATH | O_DIRECTORY, &fd);
		}
		if (err != 0)
			return fail(L, &c, path, err);
		close(fd);
	}
	return done(L, &c);
}


/***
Read a whole regular file.
@function read
@tparam[opt] int max byte limit (EFBIG beyond it)
@treturn[1] string
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_read(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	lua_Integer max = luaL_optinteger(L, 3, LUA_MAXINTEGER);
	struct stat st;
	luaL_Buffer b;
	lua_Integer total = 0;
	int err, fd;

	luaL_argcheck(L, max >= 0, 3, "limit must not be negative");
	if ((err = vfi_open_regular(L, root, path, &fd, &st)) != 0)
		return err;
	if (st.st_size > max)
		goto toobig;
	luaL_buffinit(L, &b);
	for (;;) {
		char *p = luaL_prepbuffsize(&b, COPY_CHUNK);
		ssize_t n = read(fd, p, VFI_BUFFCHUNK(COPY_CHUNK));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			close(fd);
			return vfi_push_errno(L, path, err);
		}
		if (n == 0)
			break;
		total += n;
		if (total > max)  /* grew while we read */
			goto toobig;
		luaL_addsize(&b, (size_t)n);
		if (st.st_size > 0 && total == st.st_size)
			break;  /* the file as large as it was when opened: no read to see its end */
	}
	close(fd);
	luaL_pushresult(&b);
	return 1;
toobig:
	close(fd);
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s (limit %I bytes)", path, strerror(EFBIG), max);
	lua_pushinteger(L, EFBIG);
	return 3;
}


/***
Remove a file, symlink or empty directory (a final symlink itself, not its target).
@function remove
@treturn[1] true
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_remove(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	char name[NAME_MAX + 1];
	struct fsctx c;
	int err, dirfd;

	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = parent_open(&c, path, &dirfd, name)) != 0)
		return fail(L, &c, path, err);
	if (unlinkat(dirfd, name, 0) < 0) {
		err = errno;
		if (err == EISDIR)
			err = unlinkat(dirfd, name, AT_REMOVEDIR) < 0 ? errno : 0;
	}
	close(dirfd);
	if (err != 0)
		return fail(L, &c, path, err);
	return done(L, &c);
}


/***
Rename inside root (final symlinks are moved, not followed).
@function rename
@treturn[1] true
@return[2] nil
@treturn[2] string "<from>: strerror"
@treturn[2] int errno
*/
static int
fs_rename(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *from = vfi_checkpath(L, 2);
	const char *to = vfi_checkpath(L, 3);
	char fname[NAME_MAX + 1], tname[NAME_MAX + 1];
	struct fsctx c;
	int err, fdir, tdir;

	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = parent_open(&c, from, &fdir, fname)) != 0)
		return fail(L, &c, from, err);
	if ((err = parent_open(&c, to, &tdir, tname)) != 0) {
		close(fdir);
		return fail(L, &c, to, err);
	}
	err = renameat(fdir, fname, tdir, tname) < 0 ? errno : 0;
	close(fdir);
	close(tdir);
	if (err != 0)
		return fail(L, &c, from, err);
	return done(L, &c);
}


/***
The path inside root after resolving symlinks (all but the last component must exist).
@function resolve
@treturn[1] string starting with "/"
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_resolve(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	char canon[PATH_MAX];
	struct fsctx c;
	int err, missing;

	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = resolve_plain(&c, path, canon)) < 0)
		err = walk(c.rootfd, path, 1, canon, &missing);
	if (err != 0)
		return fail(L, &c, path, err);
	ctx_close(&c);
	lua_pushstring(L, canon);
	return 1;
}


/***
File status.
@function stat
@tparam[opt=false] boolean nofollow describe a final symlink itself
@treturn[1] table {type=, mode=, uid=, gid=, size=, mtime=, mtime_ns=, ctime=, ctime_ns=,
dev=, ino=} (`*_ns`: the nanoseconds part of that second)
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_stat(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	int nofollow = lua_toboolean(L, 3);
	struct fsctx c;
	struct stat st;
	int err, fd;

	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = confined_open(&c, path, O_PATH | (nofollow ? O_NOFOLLOW : 0), &fd)) != 0)
		return fail(L, &c, path, err);
	ctx_close(&c);
	err = fstat(fd, &st) < 0 ? errno : 0;
	close(fd);
	if (err != 0)
		return vfi_push_errno(L, path, err);
	return push_stat(L, &st);
}


/***
Replace a file atomically: temp in the same dir, write, keep mode and owner of
an existing file (new: `mode` or 0644), fsync, rename, fsync the dir. A final
symlink is followed inside root. On failure the target is untouched.
@function write_atomic
@treturn[1] true
@return[2] nil
@treturn[2] string "<path>: strerror"
@treturn[2] int errno
*/
static int
fs_write_atomic(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	size_t len;
	const char *content = luaL_checklstring(L, 3, &len);
	lua_Integer mode = luaL_optinteger(L, 4, 0644);
	struct fsctx c;
	struct target t;
	int err;

	luaL_argcheck(L, mode >= 0 && mode <= 07777, 4, "mode out of range");
	if ((err = ctx_open(L, &c, root)) != 0)
		return fail(L, &c, root, err);
	if ((err = target_begin(L, &c, path, &t)) != 0)
		return err;
	err = write_all(&c, t.fd, content, len);
	return target_end(L, &c, path, &t, err, t.exists ? &t.st : NULL,
	                  t.exists ? t.st.st_mode & 07777 : (mode_t)mode);
}


/* A hold: the root it holds, until released (released: root[0] == '\0'). */
struct hold {
	char root[1];  /* NUL-terminated, allocated to its length */
};


/* Is fd the directory at path now? */
static int
same_dir(int fd, const char *path)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}


/* Release a hold; the last release of a root closes its fd and drops its registry entry. */
static int
hold_release(lua_State *L)
{
	struct hold *k = (struct hold *)luaL_checkudata(L, 1, HOLD_T);
	struct held *h;
	if (k->root[0] == '\0')
		return 0;
	if ((h = held_get(L, k->root)) != NULL && --h->refs == 0) {
		close(h->fd);
		lua_getfield(L, LUA_REGISTRYINDEX, HELD_KEY);
		lua_pushnil(L);
		lua_setfield(L, -2, k->root);
		lua_pop(L, 1);
	}
	k->root[0] = '\0';
	return 0;
}


/***
Hold root open until the hold is released: every call on that same root string
reuses one directory fd instead of opening root each time (a run's many reads).
Holds of one root share the fd (a new hold of a root that was replaced since moves
them to the directory there now); the last release (or __gc) closes it.
@function hold
@treturn[1] userdata a hold, with `release()` (also `__gc`, `__close`)
@return[2] nil
@treturn[2] string "<root>: strerror"
@treturn[2] int errno
*/
static int
fs_hold(lua_State *L)
{
	size_t len;
	const char *root = vfi_checkroot(L, 1);
	struct hold *k;
	struct held *h;
	len = strlen(root);
	k = (struct hold *)lua_newuserdatauv(L, sizeof *k + len, 0);
	k->root[0] = '\0';  /* released until the fd is there */
	luaL_setmetatable(L, HOLD_T);
	if ((h = held_get(L, root)) != NULL && !same_dir(h->fd, root)) {
		/* root was replaced since it was held (removed and made again): every holder
		** now reaches the directory at that path, as a call that opens root would */
		int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return vfi_push_errno(L, root, errno);
		close(h->fd);
		h->fd = fd;
	}
	if (h == NULL) {
		int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return vfi_push_errno(L, root, errno);
		if (lua_getfield(L, LUA_REGISTRYINDEX, HELD_KEY) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushvalue(L, -1);
			lua_setfield(L, LUA_REGISTRYINDEX, HELD_KEY);
		}
		h = (struct held *)lua_newuserdatauv(L, sizeof *h, 0);
		h->fd = fd;
		h->refs = 0;
		lua_setfield(L, -2, root);
		lua_pop(L, 1);
	}
	h->refs++;
	memcpy(k->root, root, len + 1);
	return 1;
}


static const luaL_Reg hold_methods[] = {
	{"__close",            hold_release},
	{"__gc",               hold_release},
	{"release",            hold_release},
	{NULL, NULL}
};


static const luaL_Reg funcs[] = {
#ifdef VFIOINIT_TESTING
	{"_force_fallback",    fs__force_fallback},
#endif
	{"copy",               fs_copy},
	{"dir",                fs_dir},
	{"hold",               fs_hold},
	{"mkdirs",             fs_mkdirs},
	{"read",               fs_read},
	{"remove",             fs_remove},
	{"rename",             fs_rename},
	{"resolve",            fs_resolve},
	{"stat",               fs_stat},
	{"write_atomic",       fs_write_atomic},
	{NULL, NULL}
};


void
fs_open(lua_State *L)
{
	if (luaL_newmetatable(L, HOLD_T)) {
		luaL_setfuncs(L, hold_methods, 0);
		lua_pushvalue(L, -1);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	luaL_getsubtable(L, -1, "fs");
	luaL_setfuncs(L, funcs, 0);
	lua_pop(L, 1);
}
