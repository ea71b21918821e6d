// SPDX-License-Identifier: GPL-2.0
/*
 * The user-space half of the kthread_associate_blkcg tests (rust/tests/kthread_rs_blkcg_test.rs):
 * this process moves into an io cgroup of its own, then asks the module to let a kthread do
 * block I/O on its behalf. Built by `make check`, run in the guest after the module is loaded;
 * prints KTAP.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ktap.h"

struct krs_blkcg_res {
	int32_t user_is_root;
	int32_t before_is_root;
	int32_t during_is_user;
	int32_t after_is_root;
	int32_t nested_errno;
	int32_t leaked_during_is_user;
};

#define BLKCG_RUN _IOR('b', 1, struct krs_blkcg_res)

#define CG "/sys/fs/cgroup"
#define MINE CG "/krs-blkcg"

static int dev;
static struct krs_blkcg_res res;
static int ran = -1;	/* the ioctl's result: 0 once it ran */

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	ssize_t n = -1;

	if (fd >= 0) {
		n = write(fd, s, strlen(s));
		close(fd);
	}
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

static int join(const char *cgroup)
{
	char path[128], pid[32];

	snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
	snprintf(pid, sizeof(pid), "%d", getpid());
	return write_str(path, pid);
}

/* Into an io cgroup of our own (cgroup v2, mounted here if the guest has not), then run the
 * module's test once: every case reads its part of the result. */
static int t_process_in_io_cgroup(void)
{
	struct stat st;

	if (stat(CG "/cgroup.controllers", &st))
		CHECK(mount("cgroup2", CG, "cgroup2", 0, NULL) == 0);
	CHECK(write_str(CG "/cgroup.subtree_control", "+io") == 0);
	CHECK(mkdir(MINE, 0755) == 0 || errno == EEXIST);
	CHECK(join(MINE) == 0);
	CHECK(stat("/dev/nullb0", &st) == 0);
	ran = ioctl(dev, BLKCG_RUN, &res);
	CHECK(ran == 0);
	/* A bio of this process is charged to its own cgroup, not the root: the cases below can
	 * tell the two apart. */
	CHECK(res.user_is_root == 0);
	return 0;
}

/* A kthread's bio is charged to the root cgroup before the association. */
static int t_before(void)
{
	CHECK(ran == 0 && res.before_is_root == 1);
	return 0;
}

/* While the guard lives, the kthread's bios are charged to this process's cgroup. */
static int t_during(void)
{
	CHECK(ran == 0 && res.during_is_user == 1);
	return 0;
}

/* Dropping the guard ends the association: back to the root cgroup. */
static int t_after(void)
{
	CHECK(ran == 0 && res.after_is_root == 1);
	return 0;
}

/* A second association while one is active is EBUSY. */
static int t_nested(void)
{
	CHECK(ran == 0 && res.nested_errno == -EBUSY);
	return 0;
}

/* A leaked guard still associates; the thread exits cleanly (free_kthread_struct() would
 * WARN about a left association, and any WARN fails the run). */
static int t_leaked(void)
{
	CHECK(ran == 0 && res.leaked_during_is_user == 1);
	CHECK(join(CG) == 0);
	CHECK(rmdir(MINE) == 0);
	return 0;
}

static const struct ktap_case cases[] = {
	{ "process_bio_charged_to_its_io_cgroup", t_process_in_io_cgroup },
	{ "kthread_bio_in_root_before_association", t_before },
	{ "associated_kthread_bio_charged_to_process_cgroup", t_during },
	{ "guard_drop_ends_association", t_after },
	{ "nested_association_refused", t_nested },
	{ "leaked_guard_ended_at_thread_exit", t_leaked },
};

int main(void)
{
	return ktap_run("/dev/kthread-rs-blkcg", &dev, cases, sizeof(cases) / sizeof(cases[0]), NULL, 120);
}
