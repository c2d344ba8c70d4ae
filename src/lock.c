/*
** lock.c: core.lock.acquire(root, path [, timeout]), an exclusive flock(2) on a file
** or directory inside root, held by a userdata until :unlock(), __close or
** __gc. vfioinit locks root's own directory (path "/"): nothing is created
** inside root, nothing is left behind, and every process that names the same
** root (by any path) locks the same inode. flock locks belong to the open
** file description, so a second core.lock.acquire on the same root in one process
** waits for the first like any other process would (the Lua side makes its
** use re-entrant).
*/
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "core.h"

#define LOCK_T "vfioinit.Lock"

typedef struct Lock {
	int fd;  /* -1: unlocked */
} Lock;



/*
** Open path inside root for locking: a directory read-only, a missing file
** created (0644). openat2(RESOLVE_IN_ROOT) confines symlinks to root; where
** the kernel lacks it, each component is opened with O_NOFOLLOW (a symlink
** on the way is refused with ELOOP). Returns the fd or -1 with errno set.
*/
static int
open_in_root(int rootfd, const char *path)
{
	const char *rel = path;
	struct open_how how;
	long fd;

	while (*rel == '/')
		rel++;
	if (*rel == '\0')
		return openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	memset(&how, 0, sizeof how);
	how.flags = O_RDONLY | O_CREAT | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
	how.mode = 0644;
	how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
	do
		fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
	while (fd < 0 && (errno == EAGAIN || errno == EINTR));
	if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
		return (int)fd;
	{
		char name[NAME_MAX + 1];
		int cur = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		while (cur >= 0) {
			size_t n = strcspn(rel, "/");
			int next, e;
			if (n > NAME_MAX) {
				close(cur);
				errno = ENAMETOOLONG;
				return -1;
			}
			memcpy(name, rel, n);
			name[n] = '\0';
			rel += n;
			while (*rel == '/')
				rel++;
			if (*rel == '\0') {
				next = openat(cur, name, O_RDONLY | O_CREAT | O_NOFOLLOW | O_NOCTTY
				    | O_NONBLOCK | O_CLOEXEC, 0644);
				if (next < 0 && errno == EISDIR)
					next = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			} else {
				next = openat(cur, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			}
			e = errno;
			close(cur);
			errno = e;
			if (next < 0 || *rel == '\0')
				return next;
			cur = next;
		}
		return -1;
	}
}


static Lock *
checklock(lua_State *L)
{
	return (Lock *)luaL_checkudata(L, 1, LOCK_T);
}


/***
Take an exclusive lock on a file or directory inside root (flock).
@function acquire
@string root host directory
@string path inside root ("/" = root itself; a missing file is created)
@tparam[opt] number timeout seconds to wait (nil: wait as long as it takes; 0: try once)
@treturn[1] userdata lock (`:unlock()`, also released by `__close` and `__gc`)
@return[2] nil
@treturn[2] string "<path>: strerror" or "<path>: locked by another process (waited N s)"
@treturn[2] int errno (EWOULDBLOCK when the wait timed out)
*/
static int
lock_lock(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *path = vfi_checkpath(L, 2);
	double timeout = luaL_optnumber(L, 3, -1);
	int wait_forever = lua_isnoneornil(L, 3);
	double start, delay = 0.001;
	int rootfd, err;
	Lock *lk;

	luaL_argcheck(L, wait_forever || timeout >= 0, 3, "timeout must be >= 0");
	lk = (Lock *)lua_newuserdatauv(L, sizeof *lk, 0);
	lk->fd = -1;  /* unlocked until flock succeeds: __gc is safe on any error */
	luaL_setmetatable(L, LOCK_T);

	rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return vfi_push_errno(L, root, errno);
	lk->fd = open_in_root(rootfd, path);
	err = errno;
	close(rootfd);
	if (lk->fd < 0) {
		lk->fd = -1;
		return vfi_push_errno(L, path, err);
	}
	start = vfi_now();
	for (;;) {
		if (flock(lk->fd, wait_forever ? LOCK_EX : LOCK_EX | LOCK_NB) == 0)
			return 1;
		err = errno;
		if (err == EINTR)
			continue;
		if (err != EWOULDBLOCK || (!wait_forever && vfi_now() - start >= timeout)) {
			close(lk->fd);
			lk->fd = -1;
			if (err == EWOULDBLOCK) {
				lua_pushnil(L);
				lua_pushfstring(L, "%s: locked by another process (waited %f s)", path, vfi_now() - start);
				lua_pushinteger(L, err);
				return 3;
			}
			return vfi_push_errno(L, path, err);
		}
		{
			double left = timeout - (vfi_now() - start);
			double d = delay < left ? delay : left;
			struct timespec ts;
			ts.tv_sec = (time_t)d;
			ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
			nanosleep(&ts, NULL);
			if (delay < 0.05)
				delay *= 2;
		}
	}
}


/* Release the lock (idempotent): :unlock(), __close and __gc. */
static int
lock_unlock(lua_State *L)
{
	Lock *lk = checklock(L);
	if (lk->fd >= 0) {
		close(lk->fd);  /* the last fd of the description: flock is released */
		lk->fd = -1;
	}
	return 0;
}


static int
lock_tostring(lua_State *L)
{
	Lock *lk = checklock(L);
	lua_pushfstring(L, "vfioinit.Lock (%s)", lk->fd >= 0 ? "held" : "released");
	return 1;
}


static const luaL_Reg lock_methods[] = {
	{"unlock", lock_unlock},
	{NULL, NULL}
};


void
lock_open(lua_State *L)
{
	vfi_class(L, LOCK_T, lock_unlock, lock_methods);
	luaL_getmetatable(L, LOCK_T);
	lua_pushcfunction(L, lock_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	vfi_export(L, "lock", "acquire", lock_lock);
}
