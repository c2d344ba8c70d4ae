/*
** bench/rusage: run a command once (stdin, stdout and stderr on /dev/null) and print
** what the kernel accounted to it and everything it waited for:
**   <user+system CPU, microseconds> <peak RSS, KB> <wall, microseconds> <exit status>
** It forks from this small process, so neither the CPU nor the peak RSS of the
** caller (bench/run, a Lua process) is counted, as it would be for a child forked
** from the caller itself before its exec.
**   cc -O2 -o rusage bench/rusage.c && ./rusage vfioinit --version
*/
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	struct timespec a, b;
	struct rusage ru;
	int st, fd;
	pid_t pid;
	if (argc < 2) {
		fprintf(stderr, "usage: rusage COMMAND [ARG...]\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	pid = fork();
	if (pid < 0) {
		perror("rusage: fork");
		return 2;
	}
	if (pid == 0) {
		fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[1], argv + 1);
		_exit(127);
	}
	if (wait4(pid, &st, 0, &ru) < 0) {
		perror("rusage: wait4");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%ld %ld %ld %d\n",
	    (long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000L + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec,
	    ru.ru_maxrss,
	    (long)(b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000L,
	    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	return 0;
}
