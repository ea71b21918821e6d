// SPDX-License-Identifier: GPL-2.0
/*
 * The user process of the task work benchmark (`make bench`): N times, queue a callback on this
 * process through DEVICE's ioctl and read how long it took to run (from just before the add to
 * the callback's start, measured in the kernel; it runs before the ioctl returns). Prints the
 * report's line, "krs-bench: impl=IMPL round=R op=task_work_resume_run n=N median_ns=M
 * p99_ns=P", to /dev/kmsg.
 * Usage: kthread_rs_bench_tw DEVICE IMPL ROUND N
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define TW_ADD _IO('k', 0x40)
#define TW_LAST _IO('k', 0x41)

static int cmp(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int fd, n;
	long *ns;
	FILE *kmsg;

	if (argc != 5)
		return 2;
	n = atoi(argv[4]);
	ns = calloc(n, sizeof(*ns));
	fd = open(argv[1], O_RDWR);
	if (!ns || fd < 0) {
		perror(argv[1]);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		if (ioctl(fd, TW_ADD) < 0) {
			perror("TW_ADD");
			return 1;
		}
		ns[i] = ioctl(fd, TW_LAST);
	}
	close(fd);
	qsort(ns, n, sizeof(*ns), cmp);
	kmsg = fopen("/dev/kmsg", "w");
	if (!kmsg)
		return 1;
	fprintf(kmsg, "krs-bench: impl=%s round=%s op=task_work_resume_run n=%d median_ns=%ld p99_ns=%ld\n",
		argv[2], argv[3], n, ns[n / 2], ns[n * 99 / 100]);
	fclose(kmsg);
	return 0;
}
