// SPDX-License-Identifier: GPL-2.0
/*
 * The user-space half of the kthread_use_mm tests (rust/tests/kthread_rs_mm_test.rs): this
 * process lends its address space to a kthread, which writes into it; the value is read back
 * here. Built by `make check`, run in the guest after the module is loaded; prints KTAP.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ktap.h"

struct krs_mm_req {
	uint64_t addr;
	uint64_t value;
};

#define MM_WRITE		_IOW('m', 1, struct krs_mm_req)
#define MM_WRITE_AFTER_DROP	_IOW('m', 2, struct krs_mm_req)
#define MM_NESTED		_IOW('m', 3, struct krs_mm_req)
#define MM_HOLD			_IOW('m', 4, struct krs_mm_req)
#define MM_WRITE_HELD		_IOW('m', 5, struct krs_mm_req)

static int dev;
static volatile uint64_t word;


static int req(unsigned long cmd, uint64_t value)
{
	struct krs_mm_req r = { (uint64_t)(uintptr_t)&word, value };

	return ioctl(dev, cmd, &r);
}

/* A kthread holding this process's mm writes into it: the value is here afterwards. */
static int t_write(void)
{
	word = 0;
	CHECK(req(MM_WRITE, 0x1234abcd) == 0);
	CHECK(word == 0x1234abcd);
	return 0;
}

/* The kthread has our mm inside with_mm's closure, and no mm after it (it writes nothing:
 * after the closure the CPU may still hold our page tables lazily, so a user copy could still
 * land; the closure's scope is the rule). */
static int t_write_after_drop(void)
{
	word = 7;
	CHECK(req(MM_WRITE_AFTER_DROP, 0x5555) == 0);
	CHECK(word == 7);
	return 0;
}

/* A second, nested with_mm is EBUSY, and the first still works. */
static int t_nested(void)
{
	word = 0;
	CHECK(req(MM_NESTED, 0x4242) == 0);
	CHECK(word == 0x4242);
	return 0;
}

/* A child leaves its mm with the (shared) open file and exits; the kthread then writes into
 * the child's address space, kept by the counted reference, and releases it; our own copy of
 * the variable (same address, other mm) is untouched. */
static int t_exited_process(void)
{
	pid_t c;
	int status;

	word = 1;
	c = fork();
	if (c == 0)
		_exit(req(MM_HOLD, 0) == 0 ? 0 : 1);
	CHECK(waitpid(c, &status, 0) == c && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(req(MM_WRITE_HELD, 0x9999) == 0);
	CHECK(word == 1);
	CHECK(req(MM_WRITE_HELD, 0x9999) == -1 && errno == ENOENT);	/* released */
	return 0;
}

static const struct ktap_case cases[] = {
	{ "kthread_writes_into_lent_mm", t_write },
	{ "use_mm_ends_with_the_closure", t_write_after_drop },
	{ "nested_use_mm_refused", t_nested },
	{ "mm_of_exited_process_stays_valid", t_exited_process },
};

int main(void)
{
	return ktap_run("/dev/kthread-rs-mm", &dev, cases, sizeof(cases) / sizeof(cases[0]), NULL, 120);
}
