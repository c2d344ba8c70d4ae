/*
** spawn.c: run a command without a shell, optionally chrooted into a root
** inside a private mount namespace, streaming its output lines to Lua.
**
** The parent keeps every resource of a run (pipes, pidfd, line buffers, the
** child itself) in one `vfioinit.Spawn` userdata held in a to-be-closed
** stack slot, so any error, including one raised by `on_line`, kills the
** child's process group, reaps the child and closes every descriptor.
*/
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define SPAWN_T		"vfioinit.Spawn"
#define ONLINE_KEY	"vfioinit.Spawn.on_line"	/* registry: {[handle] = on_line}, weak keys */
#define DEFAULT_PATH	"/usr/sbin:/usr/bin:/sbin:/bin"
#define KILL_GRACE	2.0	/* seconds from SIGTERM to SIGKILL */
#define DRAIN_GRACE	2.0	/* seconds to wait for EOF once the group is killed */
#define LINE_LIMIT	65536	/* longer lines reach on_line in pieces */
#define READ_CHUNK	65536
#define TICK_MS		50	/* exit polling when pidfd_open is unavailable */

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC	(1U << 2)
#endif

/* Child setup steps, reported to the parent through the CLOEXEC pipe. */
enum step {
	ST_SETPGID,	/* setpgid(0, 0) */
	ST_STDIO,	/* dup2 of /dev/null and the output pipes */
	ST_UNSHARE,	/* unshare(CLONE_NEWNS) */
	ST_PRIVATE,	/* make / recursively private */
	ST_MOUNTPOINT,	/* check/create <root>/<mnt[arg]> */
	ST_MOUNT,	/* bind-mount /<mnt[arg]> */
	ST_CHROOT,	/* chroot(root) */
	ST_CHDIR,	/* chdir("/") (arg 0) or chdir(cwd) (arg 1) */
	ST_EXEC,	/* execve of every PATH candidate */
	ST_PDEATHSIG,	/* prctl(PR_SET_PDEATHSIG) */
	ST_FORK,	/* fork of the command into its PID namespace */
	ST_BIND,	/* bind-mount the `bind` option's source on its target */
};

struct child_err {
	int step;
	int arg;
	int err;
};

static const char *const mnt_names[] = {"/proc", "/sys", "/dev"};
#define NMNT	3

static const char *const stream_names[] = {"stdout", "stderr"};

/* What the child needs, all built before fork so the child only makes syscalls. */
struct plan {
	const char *const *argv;
	const char *const *envp;
	const char *const *cand;	/* paths to try for argv[0], NULL-terminated */
	const char *root;		/* NULL: no chroot */
	const char *cwd;		/* NULL: keep (or "/" after chroot) */
	const char *mnt[NMNT];		/* host paths <root>/proc, ... */
	const char *bind_src;		/* NULL: none; else a host dir bound on bind_dst */
	const char *bind_dst;		/* host path <root><target> */
};

/* The state of one run in the parent, from fork to the result. */
struct run {
	double start, deadline;
	int phase;	/* 0: running, 1: SIGTERM sent, 2: SIGKILL sent or exited, draining */
	int timed_out, status, reaped, pidns;
};

typedef struct Spawn {
	pid_t pid;		/* child and its process group; 0 once reaped */
	int pidfd;
	int out[2];		/* stdout pipe */
	int err[2];		/* stderr pipe */
	int errp[2];		/* child setup failure pipe */
	int statp[2];		/* PID namespace init -> us: the command's wait status */
	int life[2];		/* we hold the write end: the child sees us die (POLLHUP) */
	int devnull;
	char *buf[2];		/* pending partial line per stream */
	size_t len[2];
	size_t cap[2];
	struct run run;
	double timeout;		/* 0: none */
	int finished;		/* reaped, both pipes at EOF (or given up), status read */
} Spawn;


static void
close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}



/*
** Kill what is left of the child's process group, reap the child, close
** every descriptor and free the buffers. Idempotent: __gc, __close and the
** error paths all end here.
*/
static void
spawn_release(Spawn *s)
{
	int i;
	if (s->pid > 0) {
		kill(-s->pid, SIGKILL);
		kill(s->pid, SIGKILL);	/* in case it never got its own group */
		while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
			;
		s->pid = 0;
	}
	close_fd(&s->pidfd);
	for (i = 0; i < 2; i++) {
		close_fd(&s->out[i]);
		close_fd(&s->err[i]);
		close_fd(&s->errp[i]);
		close_fd(&s->statp[i]);
		close_fd(&s->life[i]);
	}
	close_fd(&s->devnull);
	for (i = 0; i < 2; i++) {
		free(s->buf[i]);
		s->buf[i] = NULL;
		s->len[i] = s->cap[i] = 0;
	}
}


static int
spawn_gc(lua_State *L)
{
	spawn_release((Spawn *)luaL_checkudata(L, 1, SPAWN_T));
	return 0;
}


/* ---- child side: async-signal-safe calls only ---- */

static void __attribute__((noreturn))
child_fail(int fd, int step, int arg)
{
	struct child_err e;
	ssize_t r;
	e.step = step;
	e.arg = arg;
	e.err = errno;
	do
		r = write(fd, &e, sizeof e);
	while (r < 0 && errno == EINTR);
	_exit(127);
}


/* Put `fd` on `target` without CLOEXEC; `fd` was moved above 2 first. */
static int
child_move(int fd, int target)
{
	return dup2(fd, target) < 0 ? -1 : 0;
}


/* Mount /proc, /sys, /dev into root; `fresh_proc`: a new procfs for the PID namespace. */
static void
child_mounts(const struct plan *p, int wfd, int fresh_proc)
{
	struct stat st;
	int i;
	for (i = 0; i < NMNT; i++) {
		if (lstat(p->mnt[i], &st) < 0) {
			if (errno != ENOENT || (mkdir(p->mnt[i], 0755) < 0 && errno != EEXIST))
				child_fail(wfd, ST_MOUNTPOINT, i);
		} else if (!S_ISDIR(st.st_mode)) {
			errno = ENOTDIR;	/* never follow a symlink out of root */
			child_fail(wfd, ST_MOUNTPOINT, i);
		}
		/* a procfs of its own shows the command its namespace, not the host's processes */
		if (i == 0 && fresh_proc
		    && mount("proc", p->mnt[i], "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0)
			continue;
		if (mount(mnt_names[i], p->mnt[i], NULL, MS_BIND | MS_REC, NULL) < 0)
			child_fail(wfd, ST_MOUNT, i);
	}
	/* an existing directory of root, never a link out of it; not recursive: the source
	** may hold root itself (an ostree sysroot bound on its deployment's /sysroot) */
	if (p->bind_src) {
		if (lstat(p->bind_dst, &st) < 0)
			child_fail(wfd, ST_BIND, 0);
		if (!S_ISDIR(st.st_mode)) {
			errno = ENOTDIR;
			child_fail(wfd, ST_BIND, 0);
		}
		if (mount(p->bind_src, p->bind_dst, NULL, MS_BIND, NULL) < 0)
			child_fail(wfd, ST_BIND, 0);
	}
}


/* Mounts, chroot, chdir, then exec the command: the last steps of the child. */
static void __attribute__((noreturn))
child_exec(const struct plan *p, int wfd, int fresh_proc)
{
	int i, e, seen_eacces = 0;
	if (p->root) {
		child_mounts(p, wfd, fresh_proc);
		if (chroot(p->root) < 0)
			child_fail(wfd, ST_CHROOT, 0);
		if (chdir("/") < 0)
			child_fail(wfd, ST_CHDIR, 0);
	}
	if (p->cwd && chdir(p->cwd) < 0)
		child_fail(wfd, ST_CHDIR, 1);

	/* execvp's search, but in the command's own PATH and without its sh fallback. */
	e = ENOENT;
	for (i = 0; p->cand[i]; i++) {
		execve(p->cand[i], (char *const *)p->argv, (char *const *)p->envp);
		e = errno;
		if (e == EACCES)
			seen_eacces = 1;
		else if (e != ENOENT && e != ENOTDIR && e != ESTALE && e != ENODEV && e != ETIMEDOUT)
			break;
	}
	errno = seen_eacces && p->cand[i] == NULL ? EACCES : e;
	child_fail(wfd, ST_EXEC, 0);
}


/*
** The child in its own PID namespace is that namespace's init: it forks the
** command, reaps every orphan, and when the command exits hands its wait
** status to vfioinit through statp and exits. When an init exits (or is
** killed, e.g. by PR_SET_PDEATHSIG when vfioinit dies) the kernel kills
** every process left in its namespace: nothing the generator started can
** outlive vfioinit, even one that left the process group. The command is
** not the init itself, so signals behave for it as they always do.
*/
static void __attribute__((noreturn))
child_init(const struct plan *p, Spawn *s, int wfd)
{
	int status = 0, st;
	pid_t cmd, w;
	cmd = fork();
	if (cmd < 0)
		child_fail(wfd, ST_FORK, 0);
	if (cmd == 0)
		child_exec(p, wfd, 1);
	close(wfd);	/* the command reports its own setup failures */
	for (;;) {
		w = waitpid(-1, &st, 0);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break;
		if (w == cmd) {
			status = st;
			break;
		}
	}
	while (write(s->statp[1], &status, sizeof status) < 0 && errno == EINTR)
		;
	_exit(0);
}


static void __attribute__((noreturn))
child_run(const struct plan *p, Spawn *s, int pidns)
{
	int wfd = s->errp[1];
	int in, out, err, sig;
	struct sigaction sa;
	sigset_t none;
	struct pollfd pf;

	/* Exec keeps ignored signals ignored: give the command default ones. */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_DFL;
	for (sig = 1; sig < NSIG; sig++)
		sigaction(sig, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	/*
	** Die with vfioinit, even by kill -9. If it died before the prctl, the
	** write end of `life` is gone: POLLHUP (getppid() is 0 for an init).
	*/
	close(s->life[1]);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		child_fail(wfd, ST_PDEATHSIG, 0);
	pf.fd = s->life[0];
	pf.events = POLLIN;
	if (poll(&pf, 1, 0) > 0 && (pf.revents & POLLHUP))
		_exit(127);

	if (setpgid(0, 0) < 0)
		child_fail(wfd, ST_SETPGID, 0);

	in = fcntl(s->devnull, F_DUPFD_CLOEXEC, 3);
	out = fcntl(s->out[1], F_DUPFD_CLOEXEC, 3);
	err = fcntl(s->err[1], F_DUPFD_CLOEXEC, 3);
	if (in < 0 || out < 0 || err < 0 || child_move(in, 0) < 0
	    || child_move(out, 1) < 0 || child_move(err, 2) < 0)
		child_fail(wfd, ST_STDIO, 0);
#ifdef SYS_close_range
	/* Descriptors the Lua process opened without CLOEXEC stay out of the command. */
	syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
#endif

	if (p->root) {
		/*
		** The bind mounts live only in this new mount namespace: when the
		** last process of the command's tree exits (normally, on error,
		** or killed on timeout) the namespace and every mount in it go
		** away, so nothing is ever left mounted under root on the host.
		*/
		if (unshare(CLONE_NEWNS) < 0)
			child_fail(wfd, ST_UNSHARE, 0);
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			child_fail(wfd, ST_PRIVATE, 0);
	}
	if (pidns)
		child_init(p, s, wfd);
	child_exec(p, wfd, 0);
}


/* ---- parent side ---- */

/* Hand one line to on_line (at stack index fn), if any. On error: kill, reap, re-raise. */
static void
emit(lua_State *L, Spawn *s, int fn, int i, const char *p, size_t n)
{
	if (lua_isnil(L, fn))
		return;
	lua_pushvalue(L, fn);
	lua_pushstring(L, stream_names[i]);
	lua_pushlstring(L, p, n);
	if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
		spawn_release(s);
		lua_error(L);
	}
}


/* Pass on the complete lines in stream i's buffer; with `eof`, the rest too. */
static void
flush_lines(lua_State *L, Spawn *s, int fn, int i, size_t from, int eof)
{
	char *b = s->buf[i];
	size_t start = 0, len = s->len[i];
	char *nl;
	if (b == NULL)
		return;	/* nothing was ever read on this stream */
	while (from < len && (nl = memchr(b + from, '\n', len - from)) != NULL) {
		size_t end = (size_t)(nl - b);
		emit(L, s, fn, i, b + start, end - start);
		start = from = end + 1;
	}
	if (start > 0) {
		memmove(b, b + start, len - start);
		s->len[i] = len -= start;
	}
	if (len > 0 && (eof || len >= LINE_LIMIT)) {
		emit(L, s, fn, i, b, len);
		s->len[i] = 0;
	}
}


/* One read from stream i (ready per poll); closes it at EOF or on error. */
static void
pump(lua_State *L, Spawn *s, int fn, int i)
{
	int *fd = i == 0 ? &s->out[0] : &s->err[0];
	size_t old = s->len[i];
	ssize_t n;
	if (s->cap[i] - s->len[i] < READ_CHUNK) {
		size_t cap = s->len[i] + READ_CHUNK;
		char *nb = realloc(s->buf[i], cap);
		if (nb == NULL) {
			spawn_release(s);
			luaL_error(L, "not enough memory");
		}
		s->buf[i] = nb;
		s->cap[i] = cap;
	}
	n = read(*fd, s->buf[i] + s->len[i], s->cap[i] - s->len[i]);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n > 0) {
		s->len[i] += (size_t)n;
		flush_lines(L, s, fn, i, old, 0);
		return;
	}
	close_fd(fd);	/* EOF (or a read error: nothing more to get) */
	flush_lines(L, s, fn, i, old, 1);
}


/*
** If the child has exited, kill whatever it left running in its process
** group (while the zombie still reserves the group id), then reap it.
*/
static int
try_reap(Spawn *s, int *status)
{
	siginfo_t si;
	memset(&si, 0, sizeof si);
	if (waitid(P_PID, (id_t)s->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid != s->pid)
		return 0;
	kill(-s->pid, SIGKILL);
	while (waitpid(s->pid, status, 0) < 0 && errno == EINTR)
		;
	s->pid = 0;
	close_fd(&s->pidfd);
	return 1;
}


/* The setup steps whose failure names no path. */
static const char *const step_what[] = {
	[ST_SETPGID] = "spawn: setpgid",
	[ST_STDIO] = "spawn: redirect stdio",
	[ST_UNSHARE] = "spawn: unshare mount namespace",
	[ST_PRIVATE] = "spawn: make / private",
	[ST_PDEATHSIG] = "spawn: prctl(PR_SET_PDEATHSIG)",
	[ST_FORK] = "spawn: fork into a PID namespace",
};


/* Format a child setup failure as `nil, msg, errno`. */
static int
push_child_err(lua_State *L, const struct plan *p, const struct child_err *e)
{
	const char *why = strerror(e->err);
	int arg = e->arg >= 0 && e->arg < NMNT ? e->arg : 0;
	lua_pushnil(L);
	if (e->step == ST_EXEC)
		lua_pushfstring(L, "%s: %s", p->argv[0], why);
	else if (e->step == ST_MOUNTPOINT)
		lua_pushfstring(L, "%s: %s", p->mnt[arg], why);
	else if (e->step == ST_MOUNT)
		lua_pushfstring(L, "spawn: bind-mount %s on %s: %s", mnt_names[arg], p->mnt[arg], why);
	else if (e->step == ST_CHROOT)
		lua_pushfstring(L, "%s: chroot: %s", p->root, why);
	else if (e->step == ST_BIND)
		lua_pushfstring(L, "spawn: bind-mount %s on %s: %s", p->bind_src, p->bind_dst, why);
	else if (e->step == ST_CHDIR || e->step < 0 || e->step > ST_FORK || step_what[e->step] == NULL)
		lua_pushfstring(L, "%s: chdir: %s", e->arg ? p->cwd : "/", why);
	else
		lua_pushfstring(L, "%s: %s", step_what[e->step], why);
	lua_pushinteger(L, e->err);
	return 3;
}


/* ---- argument checking and plan building (may raise; nothing acquired yet) ---- */

static const char *
opt_string_field(lua_State *L, int idx, const char *name)
{
	size_t len;
	const char *s;
	if (lua_isnil(L, idx))
		return NULL;
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_argerror(L, 1, lua_pushfstring(L, "field '%s' must be a string, got %s",
		    name, luaL_typename(L, idx)));
	s = lua_tolstring(L, idx, &len);
	luaL_argcheck(L, strlen(s) == len && len > 0, 1,
	    lua_pushfstring(L, "field '%s' must be a non-empty string without NUL", name));
	return s;
}


/* A NULL-terminated char* array of `n` slots, anchored in table `anchor`. */
static const char **
new_vec(lua_State *L, int anchor, size_t n)
{
	const char **v = lua_newuserdatauv(L, (n + 1) * sizeof *v, 0);
	v[n] = NULL;
	lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
	return v;
}


/* Keep the string on top alive in `anchor` and return it; pops it. */
static const char *
keep(lua_State *L, int anchor)
{
	const char *s = lua_tostring(L, -1);
	lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
	return s;
}


/* Array of non-empty strings at idx (field `name`); each must contain '=' if `eq`. */
static size_t
check_strings(lua_State *L, int idx, const char *name, int eq)
{
	size_t n, i, len;
	if (!lua_istable(L, idx))
		luaL_argerror(L, 1, lua_pushfstring(L, "field '%s' must be an array of strings, got %s",
		    name, luaL_typename(L, idx)));
	n = lua_rawlen(L, idx);
	for (i = 1; i <= n; i++) {
		const char *s;
		if (lua_rawgeti(L, idx, (lua_Integer)i) != LUA_TSTRING)
			luaL_argerror(L, 1, lua_pushfstring(L, "%s[%d] must be a string, got %s",
			    name, (int)i, luaL_typename(L, -1)));
		s = lua_tolstring(L, -1, &len);
		if (strlen(s) != len || len == 0 || (eq && (s[0] == '=' || strchr(s, '=') == NULL)))
			luaL_argerror(L, 1, lua_pushfstring(L, eq ? "%s[%d] must be \"NAME=value\""
			    : "%s[%d] must be a non-empty string without NUL", name, (int)i));
		lua_pop(L, 1);
	}
	return n;
}


/* Does env entry `e` set the same variable as `f`? */
static int
same_var(const char *e, const char *f)
{
	size_t k = (size_t)(strchr(f, '=') - f);
	return strncmp(e, f, k + 1) == 0;
}


static void
build_env(lua_State *L, int envidx, int anchor, struct plan *p)
{
	static const char *const defaults[] = {"PATH=" DEFAULT_PATH, "LANG=C.UTF-8"};
	size_t n = 0, i, j, given = lua_isnil(L, envidx) ? 0 : check_strings(L, envidx, "env", 1);
	const char **v = new_vec(L, anchor, 2 + given);
	for (i = 0; i < 2; i++)
		v[n++] = defaults[i];
	for (i = 1; i <= given; i++) {
		const char *s;
		lua_rawgeti(L, envidx, (lua_Integer)i);
		s = keep(L, anchor);
		for (j = 0; j < n && !same_var(v[j], s); j++)
			;
		v[j] = s;	/* a later entry for the same name wins */
		if (j == n)
			n++;
	}
	v[n] = NULL;
	p->envp = v;
}


/* Where to look for argv[0]: itself if it has a '/', else each dir of the command's PATH. */
static void
build_candidates(lua_State *L, int anchor, struct plan *p)
{
	const char *path = DEFAULT_PATH, *a0 = p->argv[0], *d, *c;
	const char **v;
	size_t n = 1, i;
	for (i = 0; p->envp[i]; i++)
		if (strncmp(p->envp[i], "PATH=", 5) == 0)
			path = p->envp[i] + 5;
	if (a0 == NULL) {	/* checked by the caller; this keeps the analyzer sure too */
		luaL_error(L, "spawn: empty argv");
		return;
	}
	if (strchr(a0, '/')) {
		v = new_vec(L, anchor, 1);
		v[0] = a0;
		p->cand = v;
		return;
	}
	for (c = path; *c; c++)
		n += *c == ':';
	v = new_vec(L, anchor, n);
	for (i = 0, d = path; i < n; i++) {
		const char *end = strchr(d, ':');
		size_t dl = end ? (size_t)(end - d) : strlen(d);
		if (dl == 0)
			lua_pushfstring(L, "./%s", a0);	/* empty PATH entry: current dir */
		else {
			lua_pushlstring(L, d, dl);
			lua_pushfstring(L, "%s/%s", lua_tostring(L, -1), a0);
			lua_remove(L, -2);
		}
		v[i] = keep(L, anchor);
		d = end ? end + 1 : d + dl;
	}
	p->cand = v;
}


/* ---- core.spawn.run ---- */

/* Stack slots of spawn.run: its options table, its fields, the anchor, the Spawn userdata. */
enum { OPTS = 1, ARGV, ROOT, TIMEOUT, ONLINE, ENV, CWD, BIND, ANCHOR, UD };


/* The `bind` option: {source = host dir, target = absolute dir inside root}; only with root. */
static void
plan_bind(lua_State *L, struct plan *p)
{
	const char *src, *dst;
	if (lua_isnil(L, BIND))
		return;
	luaL_argcheck(L, lua_istable(L, BIND), 1, "field 'bind' must be a table");
	luaL_argcheck(L, p->root != NULL, 1, "field 'bind' needs 'root'");
	lua_getfield(L, BIND, "source");
	lua_getfield(L, BIND, "target");
	src = lua_tostring(L, -2);
	dst = lua_tostring(L, -1);
	luaL_argcheck(L, src != NULL && src[0] == '/', 1, "field 'bind.source' must be an absolute path");
	luaL_argcheck(L, dst != NULL && dst[0] == '/' && strstr(dst, "..") == NULL, 1,
	    "field 'bind.target' must be an absolute path inside root");
	lua_pushvalue(L, -2);
	p->bind_src = keep(L, ANCHOR);
	lua_pushfstring(L, "%s%s", p->root, dst);
	p->bind_dst = keep(L, ANCHOR);
	lua_pop(L, 2);
}


/* Check the options (raise on misuse) and build the plan; *timeout 0: none. Nothing is acquired yet. */
static void
plan_build(lua_State *L, struct plan *p, double *timeout)
{
	size_t n, i;
	luaL_checktype(L, OPTS, LUA_TTABLE);
	lua_settop(L, OPTS);
	lua_getfield(L, OPTS, "argv");
	lua_getfield(L, OPTS, "root");
	lua_getfield(L, OPTS, "timeout");
	lua_getfield(L, OPTS, "on_line");
	lua_getfield(L, OPTS, "env");
	lua_getfield(L, OPTS, "cwd");
	lua_getfield(L, OPTS, "bind");
	lua_newtable(L);	/* ANCHOR: keeps every string and vector below alive */

	memset(p, 0, sizeof *p);
	n = check_strings(L, ARGV, "argv", 0);
	luaL_argcheck(L, n > 0, 1, "field 'argv' must not be empty");
	p->root = opt_string_field(L, ROOT, "root");
	p->cwd = opt_string_field(L, CWD, "cwd");
	*timeout = 0;
	if (!lua_isnil(L, TIMEOUT)) {
		if (lua_type(L, TIMEOUT) != LUA_TNUMBER)
			luaL_argerror(L, 1, lua_pushfstring(L, "field 'timeout' must be a number, got %s",
			    luaL_typename(L, TIMEOUT)));
		*timeout = lua_tonumber(L, TIMEOUT);
		luaL_argcheck(L, *timeout > 0, 1, "field 'timeout' must be positive");
	}
	if (!lua_isnil(L, ONLINE) && !lua_isfunction(L, ONLINE))
		luaL_argerror(L, 1, lua_pushfstring(L, "field 'on_line' must be a function, got %s",
		    luaL_typename(L, ONLINE)));
	const char **v = new_vec(L, ANCHOR, n);
	for (i = 0; i < n; i++) {
		lua_rawgeti(L, ARGV, (lua_Integer)i + 1);
		v[i] = keep(L, ANCHOR);
	}
	p->argv = v;
	build_env(L, ENV, ANCHOR, p);
	build_candidates(L, ANCHOR, p);
	for (i = 0; p->root != NULL && i < NMNT; i++) {
		lua_pushfstring(L, "%s%s", p->root, mnt_names[i]);
		p->mnt[i] = keep(L, ANCHOR);
	}
	plan_bind(L, p);
	lua_settop(L, ANCHOR);
}



/* Push the registry's weak-keyed table of each handle's on_line (wait passes lines to it). */
static void
push_online_table(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, ONLINE_KEY);
	if (!lua_isnil(L, -1))
		return;
	lua_pop(L, 1);
	lua_newtable(L);
	lua_newtable(L);
	lua_pushliteral(L, "k");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, ONLINE_KEY);
}


/*
** The Spawn at UD (to-be-closed when `toclose`: spawn.run) with its pipes and
** /dev/null open and on_line kept for it. NULL after pushing nil, msg, errno.
*/
static Spawn *
spawn_new(lua_State *L, int toclose)
{
	Spawn *s = lua_newuserdatauv(L, sizeof *s, 0);
	memset(s, 0, sizeof *s);
	s->pidfd = s->out[0] = s->out[1] = s->err[0] = s->err[1] = -1;
	s->errp[0] = s->errp[1] = s->devnull = -1;
	s->statp[0] = s->statp[1] = s->life[0] = s->life[1] = -1;
	luaL_setmetatable(L, SPAWN_T);
	if (!toclose && !lua_isnil(L, ONLINE)) {
		push_online_table(L);
		lua_pushvalue(L, UD);
		lua_pushvalue(L, ONLINE);
		lua_rawset(L, -3);
		lua_pop(L, 1);
	}
	if (toclose)
		lua_toclose(L, UD);
	if (pipe2(s->out, O_CLOEXEC) < 0 || pipe2(s->err, O_CLOEXEC) < 0
	    || pipe2(s->errp, O_CLOEXEC) < 0 || pipe2(s->statp, O_CLOEXEC) < 0
	    || pipe2(s->life, O_CLOEXEC) < 0) {
		int e = errno;
		spawn_release(s);
		vfi_push_errno(L, "spawn: pipe", e);
		return NULL;
	}
	s->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (s->devnull < 0) {
		int e = errno;
		spawn_release(s);
		vfi_push_errno(L, "/dev/null", e);
		return NULL;
	}
	return s;
}


/* Start the child and keep the parent's ends. 0, or the values pushed. */
static int
spawn_start(lua_State *L, Spawn *s, const struct plan *p)
{
	struct run *run = &s->run;
	run->start = vfi_now();
	/* The child in a new PID namespace where the kernel lets us (child_init), else a plain fork. */
	s->pid = (pid_t)syscall(SYS_clone, (unsigned long)(CLONE_NEWPID | SIGCHLD), NULL, NULL, NULL, NULL);
	run->pidns = s->pid >= 0;
	if (s->pid < 0 && errno != EAGAIN && errno != ENOMEM)
		s->pid = fork();	/* EPERM (not root), EINVAL, ENOSPC, EUSERS: no namespace */
	if (s->pid < 0) {
		int e = errno;
		s->pid = 0;
		spawn_release(s);
		return vfi_push_errno(L, "spawn: fork", e);
	}
	if (s->pid == 0)
		child_run(p, s, run->pidns);
	close_fd(&s->life[0]);	/* life[1] stays open as long as we live */
	close_fd(&s->statp[1]);
	fcntl(s->statp[0], F_SETFL, O_NONBLOCK);
	close_fd(&s->out[1]);
	close_fd(&s->err[1]);
	close_fd(&s->errp[1]);
	close_fd(&s->devnull);
	return 0;
}


/* Did the child's setup fail? EOF on errp: exec succeeded (CLOEXEC closed it); data: which step failed. */
static int
child_failed(Spawn *s, struct child_err *ce)
{
	size_t got = 0;
	while (got < sizeof *ce) {
		ssize_t r = read(s->errp[0], (char *)ce + got, sizeof *ce - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close_fd(&s->errp[0]);
	if (got != sizeof *ce)
		return 0;
	while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
		;
	s->pid = 0;
	spawn_release(s);
	return 1;
}


/* Start the command: fork, exec (or its setup failure), then ready to stream. 0, or the values pushed. */
static int
spawn_begin(lua_State *L, Spawn *s, const struct plan *p)
{
	struct child_err ce;
	int r;
	if ((r = spawn_start(L, s, p)) != 0)
		return r;
	if (child_failed(s, &ce))
		return push_child_err(L, p, &ce);
#ifdef SYS_pidfd_open
	s->pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
#else
	s->pidfd = -1;
#endif
	fcntl(s->out[0], F_SETFL, O_NONBLOCK);
	fcntl(s->err[0], F_SETFL, O_NONBLOCK);
	s->run.deadline = s->timeout > 0 && isfinite(s->timeout) ? s->run.start + s->timeout : HUGE_VAL;
	return 0;
}


/* The deadline passed: SIGTERM the group, then SIGKILL, then stop reading pipes held by leavers. */
static void
on_deadline(lua_State *L, Spawn *s, int fn, double t)
{
	struct run *run = &s->run;
	if (run->phase == 0) {	/* the command itself is still running */
		run->timed_out = 1;
		kill(-s->pid, SIGTERM);
		run->phase = 1;
		run->deadline = t + KILL_GRACE;
	} else if (run->phase == 1) {
		if (s->pid > 0)
			kill(-s->pid, SIGKILL);
		run->phase = 2;
		run->deadline = t + DRAIN_GRACE;
	} else {
		/* Writers that left the group still hold the pipes: stop reading. */
		for (int k = 0; k < 2; k++) {
			int *fd = k == 0 ? &s->out[0] : &s->err[0];
			if (*fd >= 0) {
				close_fd(fd);
				flush_lines(L, s, fn, k, 0, 1);
			}
		}
		run->deadline = HUGE_VAL;
	}
}


/* How long poll may wait for s, in ms (-1: forever). */
static int
poll_ms(const Spawn *s, double t)
{
	int ms;
	if (s->run.deadline == HUGE_VAL)
		ms = -1;
	else if (s->run.deadline - t > 3600.0)
		ms = 3600000;	/* the deadline is checked again on every turn */
	else
		ms = (int)ceil((s->run.deadline - t) * 1000.0);
	if (s->pid > 0 && s->pidfd < 0 && (ms < 0 || ms > TICK_MS))
		ms = TICK_MS;
	return ms;
}


/* Reaped and both pipes done: the command's own status (from the PID namespace's init). */
static void
finish(Spawn *s)
{
	struct run *run = &s->run;
	if (run->reaped && run->pidns && WIFEXITED(run->status) && WEXITSTATUS(run->status) == 0) {
		int cs;
		if (s->statp[0] >= 0 && read(s->statp[0], &cs, sizeof cs) == (ssize_t)sizeof cs)
			run->status = cs;
	}
	close_fd(&s->statp[0]);
	s->finished = 1;
}


/*
** One turn over the `n` commands of sv (fns[i]: the stack slot of sv[i]'s on_line):
** deadlines, one poll over every pipe and pidfd, output passed on, exits reaped.
** `pf` and `owner` have room for 3 entries per command. 0, or errno of poll.
*/
static int
turn(lua_State *L, Spawn **sv, const int *fns, int n, struct pollfd *pf, int *owner)
{
	double t = vfi_now();
	int ms = -1, npf = 0, r, i, k;
	for (i = 0; i < n; i++) {
		if (!sv[i]->finished && sv[i]->pid == 0 && sv[i]->out[0] < 0 && sv[i]->err[0] < 0)
			finish(sv[i]);	/* closed before it ended */
		if (!sv[i]->finished && t >= sv[i]->run.deadline)
			on_deadline(L, sv[i], fns[i], t);
	}
	for (i = 0; i < n; i++) {
		Spawn *s = sv[i];
		int m;
		if (s->finished)
			continue;
		m = poll_ms(s, t);
		if (m >= 0 && (ms < 0 || m < ms))
			ms = m;
		if (s->out[0] >= 0)
			owner[npf] = i, pf[npf++] = (struct pollfd){.fd = s->out[0], .events = POLLIN};
		if (s->err[0] >= 0)
			owner[npf] = i, pf[npf++] = (struct pollfd){.fd = s->err[0], .events = POLLIN};
		if (s->pid > 0 && s->pidfd >= 0)
			owner[npf] = i, pf[npf++] = (struct pollfd){.fd = s->pidfd, .events = POLLIN};
	}
	if (npf == 0 && ms < 0)
		return 0;	/* every command is done */
	r = poll(pf, (nfds_t)npf, ms);
	if (r < 0 && errno != EINTR)
		return errno;
	for (k = 0; r > 0 && k < npf; k++) {
		Spawn *s = sv[owner[k]];
		if (pf[k].revents == 0 || pf[k].fd == s->pidfd)
			continue;
		pump(L, s, fns[owner[k]], pf[k].fd == s->out[0] ? 0 : 1);
	}
	for (i = 0; i < n; i++) {
		Spawn *s = sv[i];
		if (s->finished)
			continue;
		if (s->pid > 0 && try_reap(s, &s->run.status)) {
			s->run.reaped = 1;
			if (s->run.phase < 2) {	/* leftovers were just killed: drain, bounded */
				s->run.phase = 2;
				if (s->run.deadline > vfi_now() + DRAIN_GRACE)
					s->run.deadline = vfi_now() + DRAIN_GRACE;
			}
		}
		if (s->pid == 0 && s->out[0] < 0 && s->err[0] < 0)
			finish(s);
	}
	return 0;
}


static int
push_result(lua_State *L, const Spawn *s)
{
	const struct run *run = &s->run;
	lua_createtable(L, 0, 4);
	if (run->reaped && WIFEXITED(run->status)) {
		lua_pushinteger(L, WEXITSTATUS(run->status));
		lua_setfield(L, -2, "status");
	} else if (run->reaped && WIFSIGNALED(run->status)) {
		lua_pushinteger(L, WTERMSIG(run->status));
		lua_setfield(L, -2, "signal");
	}
	lua_pushboolean(L, run->timed_out);
	lua_setfield(L, -2, "timed_out");
	lua_pushnumber(L, vfi_now() - run->start);
	lua_setfield(L, -2, "seconds");
	return 1;
}


/***
 * Run a command without a shell.
 * @function run
 * @tparam table opts `argv` (array of strings, required), `root` (host dir to
 *   chroot into, in a private mount namespace with /proc, /sys, /dev bound),
 *   `timeout` (seconds), `on_line` (function(stream, line), stream "stdout" or
 *   "stderr"), `env` (array of "K=V" added to PATH=/usr/sbin:/usr/bin:/sbin:/bin
 *   and LANG=C.UTF-8), `cwd` (dir to start in, inside root), `bind` (`{source=
 *   host dir, target=dir inside root}`: bound there too, not recursively; needs `root`).
 * @treturn[1] table `{status=int|nil, signal=int|nil, timed_out=bool, seconds=float}`
 * @return[2] nil
 * @treturn[2] string "argv0: strerror" (exec failure) or the setup step that failed
 * @treturn[2] int errno
 */
static int
spawn_run(lua_State *L)
{
	struct plan p;
	struct pollfd pf[3];
	int owner[3], fn = ONLINE, err;
	double timeout;
	Spawn *s;

	plan_build(L, &p, &timeout);
	/* From here on every resource lives in the to-be-closed userdata. */
	if ((s = spawn_new(L, 1)) == NULL)
		return 3;
	s->timeout = timeout;
	if ((err = spawn_begin(L, s, &p)) != 0)
		return err;
	while (!s->finished) {
		if ((err = turn(L, &s, &fn, 1, pf, owner)) != 0) {
			spawn_release(s);
			return vfi_push_errno(L, "spawn: poll", err);
		}
	}
	push_result(L, s);
	spawn_release(s);
	return 1;
}


/***
 * Start a command and return at once (the options of `run`); `wait` streams its output.
 * Several run side by side: each is killed, reaped and closed by `h:close()`, when
 * garbage-collected, or with vfioinit (as with `run`).
 * @function start
 * @treturn[1] userdata handle: `h:done()` (bool), `h:result()` (`run`'s table, once
 *   done), `h:close()` (kill its process group, reap it, close its pipes)
 * @return[2] nil, message, errno as `run`
 */
static int
spawn_l_start(lua_State *L)
{
	struct plan p;
	double timeout;
	Spawn *s;
	int err;

	plan_build(L, &p, &timeout);
	if ((s = spawn_new(L, 0)) == NULL)
		return 3;
	s->timeout = timeout;
	if ((err = spawn_begin(L, s, &p)) != 0)
		return err;
	lua_settop(L, UD);
	return 1;
}


/***
 * One turn over the handles of `list` (an array of `start`'s handles): waits until one
 * of them has output or exits or a timeout is due, passes complete lines to their
 * `on_line`, reaps what exited. An error raised by an `on_line` propagates (that command
 * is killed and reaped; the caller closes the others).
 * @function wait
 * @treturn[1] true
 * @return[2] nil, "spawn: poll: ...", errno
 */
static int
spawn_l_wait(lua_State *L)
{
	size_t n, i;
	Spawn **sv;
	int *fns, *owner, err, running = 0;
	struct pollfd *pf;
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	n = lua_rawlen(L, 1);
	if (n == 0 || n > 4096)
		return luaL_argerror(L, 1, "1 to 4096 handles expected");
	sv = lua_newuserdatauv(L, n * (sizeof *sv + 4 * sizeof(int) + 3 * sizeof *pf), 0);
	pf = (struct pollfd *)(sv + n);
	fns = (int *)(pf + 3 * n);
	owner = fns + n;
	luaL_checkstack(L, (int)n + 4, "too many handles");
	push_online_table(L);
	for (i = 0; i < n; i++) {
		lua_rawgeti(L, 1, (lua_Integer)i + 1);
		sv[i] = luaL_checkudata(L, -1, SPAWN_T);
		lua_rawget(L, 3);	/* its on_line (or nil), kept at its own slot */
		fns[i] = lua_gettop(L);
		running += !sv[i]->finished;
	}
	if (running && (err = turn(L, sv, fns, (int)n, pf, owner)) != 0)
		return vfi_push_errno(L, "spawn: poll", err);
	lua_pushboolean(L, 1);
	return 1;
}


static int
spawn_l_done(lua_State *L)
{
	lua_pushboolean(L, ((Spawn *)luaL_checkudata(L, 1, SPAWN_T))->finished);
	return 1;
}


static int
spawn_l_result(lua_State *L)
{
	Spawn *s = luaL_checkudata(L, 1, SPAWN_T);
	if (!s->finished)
		return luaL_error(L, "spawn: the command is still running");
	return push_result(L, s);
}


/***
 * How many CPUs this process may run on (its affinity mask; else the ones online).
 * @function cpus
 * @treturn integer at least 1
 */
static int
spawn_l_cpus(lua_State *L)
{
	cpu_set_t set;
	long n = 0;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	lua_pushinteger(L, n < 1 ? 1 : n);
	return 1;
}


static const luaL_Reg spawn_methods[] = {
	{"close", spawn_gc},
	{"done", spawn_l_done},
	{"result", spawn_l_result},
	{NULL, NULL}
};


void
spawn_open(lua_State *L)
{
	vfi_class(L, SPAWN_T, spawn_gc, spawn_methods);
	vfi_export(L, "spawn", "run", spawn_run);
	vfi_export(L, "spawn", "start", spawn_l_start);
	vfi_export(L, "spawn", "wait", spawn_l_wait);
	vfi_export(L, "spawn", "cpus", spawn_l_cpus);
}
