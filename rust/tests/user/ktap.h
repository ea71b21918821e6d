/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the user-space test programs share: CHECK() for a case's assertions, and ktap_run(),
 * which opens the test module's device, runs the cases and prints KTAP on stdout.
 */
#ifndef KRS_KTAP_H
#define KRS_KTAP_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Why the current case failed. */
static char why[300];

#define CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			snprintf(why, sizeof(why), "line %d: %s (errno %d)", __LINE__, #cond, errno); \
			return 1;					\
		}							\
	} while (0)

struct ktap_case {
	const char *name;
	int (*fn)(void);	/* 0: pass; else fail, with `why` set */
};

/* Open `device` into *dev, run each case (after `before`, if any), print KTAP; never hang
 * longer than `seconds`. A device that does not open fails every case. */
static int ktap_run(const char *device, int *dev, const struct ktap_case *cases, int n,
		    void (*before)(void), unsigned int seconds)
{
	alarm(seconds);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("KTAP version 1\n1..%d\n", n);
	*dev = open(device, O_RDWR);
	for (int i = 0; i < n; i++) {
		int r = 1;

		why[0] = 0;
		if (*dev < 0) {
			snprintf(why, sizeof(why), "open %s: %s", device, strerror(errno));
		} else {
			if (before)
				before();
			r = cases[i].fn();
		}
		if (r)
			printf("not ok %d %s # %s\n", i + 1, cases[i].name, why);
		else
			printf("ok %d %s\n", i + 1, cases[i].name);
	}
	return 0;
}

#endif
