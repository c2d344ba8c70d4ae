/*
** libkmod lookups for one kernel's module tree inside a root.
**
** libkmod opens its files itself, by host path, following symlinks and
** blocking on FIFOs: pointed at <root>/lib/modules/<kver> it would read a
** host index through `modules.dep.bin -> /lib/modules/...` or hang on a FIFO.
** So it never gets a path through root. kmod.new opens the module dir and
** each modprobe.d dir through src/fs.c (resolved inside root) and, when every
** file libkmod will read in them is a regular file (no link, no FIFO), points
** libkmod at /proc/self/fd/<fd> of those dirs: nothing is copied or written,
** as a read-only command must. Otherwise (a link among them, a config given as
** one file, no /proc) it copies the indexes it needs and the modprobe.d files
** into a private temp dir, each opened through src/fs.c (regular files only,
** never blocking), and points libkmod at the copy. The dirs or the temp dir
** live as long as the context.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libkmod.h>

#include "core.h"

/*
** A module of its own, vfioinit.core.kmod (src/core.c loads it on first use of core.kmod):
** libkmod links libcrypto, 1.4 MB resident, which the image reader and verify never need.
*/
#define KMOD_T "vfioinit.Kmod"
#define COPY_CHUNK (1 << 16)

/* What libkmod reads below its module dir (kmod 30; later ones add weakdep). */
static const char *const index_names[] = {
	"modules.dep.bin", "modules.alias.bin", "modules.symbols.bin",
	"modules.builtin.alias.bin", "modules.builtin.bin", "modules.builtin.modinfo",
	"modules.softdep", "modules.weakdep",
	"modules.dep",  /* ours: the dep lines, for the placeholders of module() */
	NULL
};

#define MAX_DIRS 16  /* the module dir and the modprobe.d dirs (machine.MODPROBE_DIRS: 5) */

typedef struct {
	struct kmod_ctx *ctx;  /* NULL once closed */
	char *tmpdir;          /* the dir libkmod reads: the private copy, or /proc/self/fd/N */
	int copied;            /* tmpdir is the private copy: removed on close */
	int fds[MAX_DIRS];     /* the dirs libkmod reads through /proc/self/fd; -1: none */
	char *moddir;          /* inside root, as given: module paths are reported under it */
	char *dep;             /* the copied modules.dep text, NUL-terminated, or NULL */
} Kmod;


static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}


/* Free the context and remove the temp dir. Idempotent (close, __gc, errors). */
static void
kmod_release(Kmod *k)
{
	if (k->ctx != NULL) {
		kmod_unref(k->ctx);
		k->ctx = NULL;
	}
	if (k->tmpdir != NULL) {
		if (k->copied)
			nftw(k->tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		free(k->tmpdir);
		k->tmpdir = NULL;
	}
	for (int i = 0; i < MAX_DIRS; i++) {
		if (k->fds[i] >= 0)
			close(k->fds[i]);
		k->fds[i] = -1;
	}
	free(k->moddir);
	k->moddir = NULL;
	free(k->dep);
	k->dep = NULL;
}


static Kmod *
checkkmod(lua_State *L)
{
	Kmod *k = (Kmod *)luaL_checkudata(L, 1, KMOD_T);
	if (k->ctx == NULL)
		luaL_error(L, "attempt to use a closed kmod context");
	return k;
}


static void
silent_log(void *data, int priority, const char *file, int line,
	   const char *fn, const char *format, va_list args)
{
	(void)data; (void)priority; (void)file; (void)line; (void)fn;
	(void)format; (void)args;
}


/* Copy everything from fd to a new file `dst` (host path in our temp dir). */
static int
copy_fd(int fd, const char *dst)
{
	char *buf = malloc(COPY_CHUNK);
	int out, err = 0;
	if (buf == NULL)
		return ENOMEM;
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0) {
		free(buf);
		return errno;
	}
	for (;;) {
		ssize_t n = read(fd, buf, COPY_CHUNK), w = 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? errno : 0;
			break;
		}
		while (w < n) {
			ssize_t m = write(out, buf + w, (size_t)(n - w));
			if (m < 0 && errno == EINTR)
				continue;
			if (m < 0) {
				err = errno;
				break;
			}
			w += m;
		}
		if (err != 0)
			break;
	}
	free(buf);
	if (close(out) < 0 && err == 0)
		err = errno;
	return err;
}


/*
** Copy `path` (inside root) to `dst`. Returns 0 (copied), -1 (absent: a
** missing file or a dangling link, which libkmod would skip too) or the
** number of values pushed (nil, "PATH: reason", errno): a FIFO, a device, a
** directory where a file belongs, an I/O error.
*/
static int
copy_in(lua_State *L, const char *root, const char *path, const char *dst)
{
	struct stat st;
	int fd, n, err;
	if ((n = vfi_open_regular(L, root, path, &fd, &st)) != 0) {
		if (lua_tointeger(L, -1) == ENOENT) {
			lua_pop(L, n);
			return -1;
		}
		return n;
	}
	err = copy_fd(fd, dst);
	close(fd);
	if (err != 0)
		return vfi_push_errno(L, dst, err);
	return 0;
}


/*
** Copy the *.conf files of modprobe.d dir `dir` (inside root) into `dst`,
** as libkmod would list them: hidden names, other suffixes and
** subdirectories are skipped; a FIFO or device named *.conf is an error.
*/
static int
copy_conf_dir(lua_State *L, const char *root, const char *dir, int dfd, const char *dst)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	int n = 0;
	if (d == NULL) {
		int e = errno;
		close(dfd);
		return vfi_push_errno(L, dir, e);
	}
	if (mkdir(dst, 0700) < 0) {
		int e = errno;
		closedir(d);
		return vfi_push_errno(L, dst, e);
	}
	while (n == 0 && (de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0)
			continue;
		lua_pushfstring(L, "%s/%s", dir, de->d_name);
		lua_pushfstring(L, "%s/%s", dst, de->d_name);
		n = copy_in(L, root, lua_tostring(L, -2), lua_tostring(L, -1));
		if (n > 0 && lua_tointeger(L, -1) == EISDIR) {
			lua_pop(L, n);  /* libkmod ignores directories in modprobe.d */
			n = 0;
		}
		if (n > 0) {  /* keep the error, drop the two paths below it */
			lua_rotate(L, -(n + 2), n);
			lua_pop(L, 2);
		} else {
			lua_pop(L, 2);
			n = 0;
		}
	}
	closedir(d);
	return n;
}


/* Copy config path i (a modprobe.d dir or one file) into the temp dir; push its copy's path. */
static int
copy_config(lua_State *L, Kmod *k, const char *root, const char *path, int i)
{
	int fd, err, n;
	err = vfi_open_dir(L, root, path, &fd);
	if (err == ENOENT)
		return -1;
	if (err == ENOTDIR) {  /* a single file, as libkmod accepts too */
		lua_pushfstring(L, "%s/conf%d.file", k->tmpdir, i);
		n = copy_in(L, root, path, lua_tostring(L, -1));
		if (n < 0)
			lua_pop(L, 1);
		else if (n > 0)
			lua_remove(L, -n - 1);
		return n;
	}
	if (err != 0)
		return vfi_push_errno(L, path, err);
	lua_pushfstring(L, "%s/conf%d", k->tmpdir, i);
	n = copy_conf_dir(L, root, path, fd, lua_tostring(L, -1));
	if (n > 0)
		lua_remove(L, -n - 1);
	return n;
}


/* Read our own copy of modules.dep (for module()'s placeholders); absent is fine. */
static void
load_dep(Kmod *k)
{
	char path[4096];
	struct stat st;
	int fd;
	snprintf(path, sizeof path, "%s/modules.dep", k->tmpdir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	if (fstat(fd, &st) == 0 && (k->dep = malloc((size_t)st.st_size + 1)) != NULL) {
		ssize_t n = read(fd, k->dep, (size_t)st.st_size);
		k->dep[n > 0 ? n : 0] = '\0';
	}
	close(fd);
}


/*
** The direct way (top of this file): is every name of `names` (NULL-terminated; all
** entries when NULL, as libkmod lists a modprobe.d dir: *.conf, not hidden) in the dir
** `dfd` absent, a regular file or (for a modprobe.d entry, which libkmod skips) a dir?
*/
static int
plain_files(int dfd, const char *const *names)
{
	struct stat st;
	if (names != NULL) {
		for (size_t i = 0; names[i] != NULL; i++) {
			if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 ? !S_ISREG(st.st_mode) : errno != ENOENT)
				return 0;
		}
		return 1;
	}
	int dup = fcntl(dfd, F_DUPFD_CLOEXEC, 0), ok = 1;
	DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
	struct dirent *de;
	if (d == NULL) {
		if (dup >= 0)
			close(dup);
		return 0;
	}
	while (ok && (de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0)
			continue;
		ok = fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
		    && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
	}
	closedir(d);
	return ok;
}


/* "/proc/self/fd/<fd>" of a dir we hold open, kept on the stack; NULL when /proc does not show it. */
static const char *
fd_path(lua_State *L, int fd)
{
	struct stat a, b;
	const char *p = lua_pushfstring(L, "/proc/self/fd/%d", fd);
	if (stat(p, &a) != 0 || fstat(fd, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		lua_pop(L, 1);
		return NULL;
	}
	return p;
}


/*
** Point libkmod at root's own files when that is safe (top of this file): fills k->tmpdir,
** k->fds and `configs` (their paths stay on the stack). 1 when done, 0 when the private copy
** is needed (nothing is left open then), or the values pushed on an error.
*/
static int
direct(lua_State *L, Kmod *k, const char *root, int t, size_t n, const char **configs)
{
	int top = lua_gettop(L), fd, err, nfd = 0;
	size_t nc = 0;
	const char *p;
	if (n + 1 > MAX_DIRS)
		return 0;
	if ((err = vfi_open_dir(L, root, k->moddir, &fd)) != 0)
		return err == ENOENT || err == ENOTDIR ? 0 : vfi_push_errno(L, k->moddir, err);
	k->fds[nfd++] = fd;
	if (!plain_files(fd, index_names) || (p = fd_path(L, fd)) == NULL || (k->tmpdir = strdup(p)) == NULL)
		goto copy;
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, t, (lua_Integer)i + 1);
		err = vfi_open_dir(L, root, vfi_checkpath(L, -1), &fd);
		lua_pop(L, 1);
		if (err == ENOENT)
			continue;
		if (err != 0)
			goto copy;  /* a config that is one file, or an error the copy reports */
		k->fds[nfd++] = fd;
		if (!plain_files(fd, NULL) || (p = fd_path(L, fd)) == NULL)
			goto copy;
		configs[nc++] = p;
	}
	configs[nc] = NULL;
	return 1;
copy:
	for (int i = 0; i < nfd; i++) {
		close(k->fds[i]);
		k->fds[i] = -1;
	}
	free(k->tmpdir);
	k->tmpdir = NULL;
	lua_settop(L, top);
	return 0;
}


/* Make the private temp dir under $TMPDIR (or /tmp). 0, or the values pushed. */
static int
make_tmpdir(lua_State *L, Kmod *k)
{
	const char *tmp = getenv("TMPDIR");
	lua_pushfstring(L, "%s/vfioinit-kmod.XXXXXX", tmp != NULL && tmp[0] == '/' ? tmp : "/tmp");
	if ((k->tmpdir = strdup(lua_tostring(L, -1))) == NULL || mkdtemp(k->tmpdir) == NULL) {
		int e = k->tmpdir != NULL ? errno : ENOMEM;
		free(k->tmpdir);
		k->tmpdir = NULL;
		return vfi_push_errno(L, lua_tostring(L, -1), e);
	}
	lua_pop(L, 1);
	return 0;
}


/* Copy the indexes libkmod reads from moddir (inside root). 0, or the values pushed. */
static int
copy_indexes(lua_State *L, Kmod *k, const char *root)
{
	for (size_t i = 0; index_names[i] != NULL; i++) {
		int r;
		lua_pushfstring(L, "%s/%s", k->moddir, index_names[i]);
		lua_pushfstring(L, "%s/%s", k->tmpdir, index_names[i]);
		if ((r = copy_in(L, root, lua_tostring(L, -2), lua_tostring(L, -1))) > 0)
			return r;
		lua_pop(L, 2);
	}
	return 0;
}


/*
** Copy the config paths of table `t` (n of them) and fill `configs` with
** their copies, NULL-terminated; the copies' paths stay on the stack. 0, or
** the values pushed.
*/
static int
copy_configs(lua_State *L, Kmod *k, const char *root, int t, size_t n, const char **configs)
{
	size_t nc = 0;
	for (size_t i = 0; i < n; i++) {
		int r;
		lua_rawgeti(L, t, (lua_Integer)i + 1);
		r = copy_config(L, k, root, vfi_checkpath(L, -1), (int)i);
		if (r > 0)
			return r;
		if (r == 0) {  /* the copy's path is on the stack, above the config path */
			lua_remove(L, -2);
			configs[nc++] = lua_tostring(L, -1);
		} else {
			lua_pop(L, 1);
		}
	}
	configs[nc] = NULL;
	return 0;
}


/*
** kmod.new(root, moddir [, {config_path...}]): moddir (/lib/modules/<kver>)
** and the config paths (modprobe.d dirs or files) are inside root. Only the
** copies reach libkmod (see the top of this file).
*/
static int
kmod_l_new(lua_State *L)
{
	const char *root = vfi_checkroot(L, 1);
	const char *moddir = vfi_checkpath(L, 2);
	const char **configs;
	size_t n = 0;
	int top, r;
	Kmod *k;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		n = lua_rawlen(L, 3);
	}
	/* closed handle first: an error below leaves a safe object for __gc */
	k = (Kmod *)lua_newuserdatauv(L, sizeof(Kmod), 0);
	memset(k, 0, sizeof *k);
	for (int i = 0; i < MAX_DIRS; i++)
		k->fds[i] = -1;
	luaL_setmetatable(L, KMOD_T);
	configs = (const char **)lua_newuserdatauv(L, (n + 1) * sizeof(char *), 0);
	top = lua_gettop(L);
	if ((k->moddir = strdup(moddir)) == NULL)
		return vfi_push_errno(L, moddir, ENOMEM);
	if ((r = direct(L, k, root, 3, n, configs)) > 1) {
		kmod_release(k);
		return r;
	}
	if (r == 0) {
		k->copied = 1;
		if ((r = make_tmpdir(L, k)) != 0 || (r = copy_indexes(L, k, root)) != 0
		    || (r = copy_configs(L, k, root, 3, n, configs)) != 0) {
			kmod_release(k);
			return r;
		}
		load_dep(k);
	}
	errno = 0;
	k->ctx = kmod_new(k->tmpdir, configs);
	if (k->ctx == NULL) {
		int e = errno ? errno : ENOMEM;
		kmod_release(k);
		return vfi_push_errno(L, moddir, e);
	}
	kmod_set_log_fn(k->ctx, silent_log, NULL);
	if (kmod_load_resources(k->ctx) < 0) {
		/* an index is missing: libkmod looks up what it has, as modprobe does */
	}
	lua_settop(L, top - 1);
	return 1;
}


static int
kmod_l_close(lua_State *L)
{
	kmod_release((Kmod *)luaL_checkudata(L, 1, KMOD_T));
	return 0;
}


/* Push the names of a module list as a Lua array. */
static void
push_names(lua_State *L, struct kmod_list *list)
{
	struct kmod_list *l;
	int i = 0;
	lua_newtable(L);
	kmod_list_foreach(l, list) {
		struct kmod_module *m = kmod_module_get_module(l);
		lua_pushstring(L, kmod_module_get_name(m));
		lua_rawseti(L, -2, ++i);
		kmod_module_unref(m);
	}
}


/*
** An empty file at `dep` (a path relative to the module dir, from the root's
** modules.dep) in the temp dir. Absolute paths and "." or ".." components are
** skipped: nothing is ever created outside the temp dir, which holds only
** what we made (no symlinks to follow).
*/
static void
placeholder(Kmod *k, const char *dep, size_t n)
{
	char path[4096];
	size_t base = strlen(k->tmpdir) + 1, i, start;
	int fd;
	if (n == 0 || dep[0] == '/' || base + n >= sizeof path)
		return;
	memcpy(path, k->tmpdir, base - 1);
	path[base - 1] = '/';
	memcpy(path + base, dep, n);
	path[base + n] = '\0';
	for (i = start = base; i <= base + n; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		if ((i - start == 1 && path[start] == '.')
		    || (i - start == 2 && path[start] == '.' && path[start + 1] == '.') || i == start)
			return;
		if (path[i] == '/') {
			path[i] = '\0';
			if (mkdir(path, 0700) < 0 && errno != EEXIST)
				return;
			path[i] = '/';
		}
		start = i + 1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}


/*
** libkmod stats every dependency's .ko before it lists it, and the copy has
** no .ko files: give the deps on `rel`'s line of modules.dep placeholders.
*/
static void
make_placeholders(Kmod *k, const char *rel)
{
	size_t rl = strlen(rel);
	const char *line, *end, *p;
	if (k->dep == NULL)
		return;
	for (line = k->dep; *line != '\0'; line = *end ? end + 1 : end) {
		end = strchr(line, '\n');
		if (end == NULL)
			end = line + strlen(line);
		if ((size_t)(end - line) > rl && memcmp(line, rel, rl) == 0 && line[rl] == ':')
			break;
	}
	if (*line == '\0')
		return;
	for (p = line + rl + 1; p < end;) {
		size_t n;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		for (n = 0; p + n < end && p[n] != ' ' && p[n] != '\t'; n++)
			;
		placeholder(k, p, n);
		p += n;
	}
}


/* A path libkmod gives, under the temp dir, as under the module dir given to kmod.new (inside root). */
static void
push_path(lua_State *L, Kmod *k, const char *path)
{
	size_t tl = strlen(k->tmpdir);
	if (strncmp(path, k->tmpdir, tl) == 0 && path[tl] == '/')
		lua_pushfstring(L, "%s%s", k->moddir, path + tl);
	else
		lua_pushstring(L, path);
}


/*
** ctx:module(name) -> {name=, state=, path=, deps=} | nil
** A lookup by name finds loadable modules (modules.dep) and built-in ones
** (modules.builtin); a built-in module has no path.
*/
static int
kmod_l_module(lua_State *L)
{
	Kmod *k = checkkmod(L);
	const char *name = luaL_checkstring(L, 2);
	struct kmod_module *mod = NULL;
	struct kmod_list *deps;
	const char *path;
	int err;
	err = kmod_module_new_from_name(k->ctx, name, &mod);
	if (err < 0)
		return vfi_push_errno(L, name, -err);
	path = kmod_module_get_path(mod);
	if (path == NULL) {
		/* not in modules.dep: built in, or missing. Ask the builtin index. */
		struct kmod_list *list = NULL, *l;
		int builtin = 0;
		kmod_module_unref(mod);
		mod = NULL;
		err = kmod_module_new_from_lookup(k->ctx, name, &list);
		if (err < 0)
			return vfi_push_errno(L, name, -err);
		kmod_list_foreach(l, list) {
			struct kmod_module *m = kmod_module_get_module(l);
			if (mod == NULL && kmod_module_get_path(m) == NULL &&
			    kmod_module_get_initstate(m) == KMOD_MODULE_BUILTIN)
				builtin = 1;
			kmod_module_unref(m);
		}
		kmod_module_unref_list(list);
		if (!builtin) {
			lua_pushnil(L);
			return 1;
		}
		lua_createtable(L, 0, 3);
		lua_pushstring(L, name);
		lua_setfield(L, -2, "name");
		lua_pushliteral(L, "builtin");
		lua_setfield(L, -2, "state");
		lua_newtable(L);
		lua_setfield(L, -2, "deps");
		return 1;
	}
	lua_createtable(L, 0, 4);
	lua_pushstring(L, kmod_module_get_name(mod));
	lua_setfield(L, -2, "name");
	lua_pushliteral(L, "module");
	lua_setfield(L, -2, "state");
	push_path(L, k, path);
	lua_setfield(L, -2, "path");
	if (k->copied && strncmp(path, k->tmpdir, strlen(k->tmpdir)) == 0 && path[strlen(k->tmpdir)] == '/')
		make_placeholders(k, path + strlen(k->tmpdir) + 1);
	deps = kmod_module_get_dependencies(mod);
	push_names(L, deps);
	kmod_module_unref_list(deps);
	lua_setfield(L, -2, "deps");
	kmod_module_unref(mod);
	return 1;
}


static int
cmpstr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}


/* ctx:lookup(modalias) -> sorted unique array of module names */
static int
kmod_l_lookup(lua_State *L)
{
	Kmod *k = checkkmod(L);
	const char *alias = luaL_checkstring(L, 2);
	struct kmod_list *list = NULL, *l;
	const char **names;
	size_t n = 0, i, out = 0;
	int err = kmod_module_new_from_lookup(k->ctx, alias, &list);
	if (err < 0)
		return vfi_push_errno(L, alias, -err);
	kmod_list_foreach(l, list) n++;
	names = (const char **)lua_newuserdatauv(L, (n ? n : 1) * sizeof(char *), 0);
	i = 0;
	kmod_list_foreach(l, list) {
		struct kmod_module *m = kmod_module_get_module(l);
		lua_pushstring(L, kmod_module_get_name(m));  /* keep the string alive on the stack */
		names[i++] = lua_tostring(L, -1);
		kmod_module_unref(m);
	}
	kmod_module_unref_list(list);
	qsort(names, n, sizeof(char *), cmpstr);
	lua_newtable(L);
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(names[i], names[i - 1]) == 0)
			continue;
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, (lua_Integer)++out);
	}
	return 1;
}


static const luaL_Reg kmod_methods[] = {
	{"close", kmod_l_close},
	{"lookup", kmod_l_lookup},
	{"module", kmod_l_module},
	{NULL, NULL}
};

void
kmod_open(lua_State *L)
{
	vfi_class(L, KMOD_T, kmod_l_close, kmod_methods);
	vfi_export(L, "kmod", "new", kmod_l_new);
}


__attribute__((visibility("default"))) int
luaopen_vfioinit_core_kmod(lua_State *L)
{
	return vfi_open_part(L, "kmod", kmod_open);
}
