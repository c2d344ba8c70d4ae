/*
** fuzz/input_file.h: for harnesses whose core function reads a file inside a
** root. Each input is written to ROOT/name, where ROOT is a private temp dir (on
** /dev/shm when there is one) made once per process and removed at exit; the file
** is rewritten in place for every input.
*/
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int input_fd = -1;
static char input_root[64], input_path[128];


static void
input_cleanup(void)
{
	unlink(input_path);
	rmdir(input_root);
}


/* Write data to ROOT/name (name: a plain file name); returns ROOT. */
static const char *
fuzz_input_file(const char *name, const uint8_t *data, size_t size)
{
	if (input_fd < 0) {
		strcpy(input_root, access("/dev/shm", W_OK) == 0 ? "/dev/shm/vfioinit-fuzz-XXXXXX"
		    : "/tmp/vfioinit-fuzz-XXXXXX");
		if (mkdtemp(input_root) == NULL)
			abort();
		snprintf(input_path, sizeof input_path, "%s/%s", input_root, name);
		input_fd = open(input_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (input_fd < 0)
			abort();
		atexit(input_cleanup);
	}
	if (ftruncate(input_fd, 0) != 0 || pwrite(input_fd, data, size, 0) != (ssize_t)size)
		abort();
	return input_root;
}
