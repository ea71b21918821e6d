// SPDX-License-Identifier: GPL-2.0
/*
 * The user-space half of the task_work tests (rust/tests/kthread_rs_task_work_test.rs).
 *
 * Real processes ask the test module, through /dev/kthread-rs-task-work, to queue probe
 * callbacks with kthread_rs::task_work on themselves, on their children and on a task that
 * has exited, then check what the probes saw. A probe that runs in a task with an mm writes a
 * magic value into that task's memory, so "ran before the system call returned" is checked by
 * reading a variable right after the call, with no system call in between.
 *
 * Built by `make check` (scripts/check.sh) and run in the guest after the module is loaded
 * (scripts/guest-check.sh); prints KTAP on stdout. The last case unloads the module.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ktap.h"

#define DEVICE "/dev/kthread-rs-task-work"
#define MODULE "kthread_rs_task_work_test"

struct krs_tw_req {
	int32_t pid;		/* 0: the caller, -1: the task held by TW_HOLD, else a pid */
	uint32_t mode;		/* 1 RESUME, 2 SIGNAL, 3 SIGNAL_NO_IPI */
	uint32_t slot;
	uint32_t count;
	uint64_t uaddr;		/* where the probe writes magic (0: nowhere) */
	uint64_t magic;
	uint32_t fail_nth;	/* fail the nth allocation of the call (0: none) */
	int32_t err;		/* out: 0 or -errno of the failed add */
	uint32_t returned;	/* out: callbacks handed back intact */
	uint32_t pad;
};

struct krs_tw_rec {
	uint32_t slot, runs, drops;
	int32_t pid, tgid;
	uint32_t at_exit, had_mm, pad;
};

#define TW_ADD		_IOWR('k', 1, struct krs_tw_req)
#define TW_ADD_CANCELABLE _IOWR('k', 2, struct krs_tw_req)
#define TW_CANCEL	_IO('k', 3)
#define TW_QUERY	_IOWR('k', 4, struct krs_tw_rec)
#define TW_RESET	_IO('k', 5)
#define TW_HOLD		_IO('k', 6)
#define TW_SLEEP	_IO('k', 7)
#define TW_RELEASE	_IO('k', 8)
#define TW_SLEEPERS	_IO('k', 9)
#define TW_REFCOUNT	_IO('k', 10)
#define TW_ARM_ON_CLOSE	_IOWR('k', 11, struct krs_tw_req)

enum { RESUME = 1, SIGNAL = 2, SIGNAL_NO_IPI = 3 };

static int dev;
static volatile uint64_t word;	/* what the probes write to */


static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static struct krs_tw_req add(int cmd, int pid, int mode, int slot, int count, uint64_t magic,
			     unsigned int fail_nth)
{
	struct krs_tw_req r = {
		.pid = pid, .mode = mode, .slot = slot, .count = count,
		.uaddr = magic ? (uint64_t)(uintptr_t)&word : 0, .magic = magic,
		.fail_nth = fail_nth,
	};

	if (ioctl(dev, cmd, &r))
		r.err = -errno;
	return r;
}

static struct krs_tw_rec query(int slot)
{
	struct krs_tw_rec r = { .slot = slot };

	if (ioctl(dev, TW_QUERY, &r))
		memset(&r, 0xff, sizeof(r));
	return r;
}

static int refcount(void)
{
	return ioctl(dev, TW_REFCOUNT);
}

/*
 * The module references that one open file of the device holds: none up to 7.2; one from
 * 7.3, whose Rust miscdevice sets fops->owner. Measured with a second file, closed again
 * (its release has run when close() returns to user space).
 */
static int file_refs(void)
{
	int before = refcount(), after, fd = open(DEVICE, O_RDWR);

	if (fd < 0)
		return -1;
	after = refcount();
	close(fd);
	return after - before;
}

/* Wait (up to 10 s) until pid is blocked, off the CPU: its wchan is a symbol, not "0". */
static int wait_blocked(pid_t pid)
{
	char path[64], buf[64];

	snprintf(path, sizeof(path), "/proc/%d/wchan", pid);
	for (int i = 0; i < 2000; i++) {
		int fd = open(path, O_RDONLY);
		ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

		if (fd >= 0)
			close(fd);
		if (n > 0 && !(n == 1 && buf[0] == '0'))
			return 0;
		msleep(5);
	}
	return -1;
}

/* Wait until pid sleeps in TW_SLEEP. */
static int wait_asleep(pid_t pid)
{
	for (int i = 0; i < 2000; i++) {
		if (ioctl(dev, TW_SLEEPERS) >= 1)
			return wait_blocked(pid);
		msleep(5);
	}
	return -1;
}

/* Reap pid within 10 s (killing it after that); its exit status, or -1. */
static int reap(pid_t pid)
{
	int status;

	for (int i = 0; i < 2000; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		msleep(5);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

/* A child that sleeps in TW_SLEEP; it exits 0 if the sleep returned `want_ret` (0, or -1 for
 * EINTR) and the probe's write of `magic` is there (or, with magic 0, is not). */
static pid_t sleeping_child(int want_ret, uint64_t magic)
{
	pid_t pid;

	word = 0;
	pid = fork();
	if (pid == 0) {
		int r = ioctl(dev, TW_SLEEP);

		if (r != want_ret || (r == -1 && errno != EINTR))
			_exit(2);
		if (magic ? word != magic : word != 0)
			_exit(3);
		_exit(0);
	}
	return pid;
}

/* A child that closes the device and blocks in read() on a pipe (which RESUME does not
 * interrupt) until release_reader(); it exits 0 if the probe's write of `magic` is there
 * (or, with magic 0, is not). */
static pid_t reader_child(int p[2], uint64_t magic)
{
	char b;
	pid_t pid;

	word = 0;
	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		close(dev);
		read(p[0], &b, 1);
		_exit((magic ? word == magic : word == 0) ? 0 : 6);
	}
	return pid;
}

static void release_reader(int p[2])
{
	char b = 0;

	write(p[1], &b, 1);
	close(p[0]);
	close(p[1]);
}

/* RESUME on the caller: the probe ran in this task before the ioctl returned to user mode. */
static int self_mode(int mode)
{
	struct krs_tw_req r;
	struct krs_tw_rec q;

	word = 0;
	r = add(TW_ADD, 0, mode, 0, 1, 0x1111 * mode, 0);
	CHECK(r.err == 0);
	CHECK(word == 0x1111 * (uint64_t)mode);	/* no system call since the ioctl */
	q = query(0);
	CHECK(q.runs == 1 && q.drops == 1);
	CHECK(q.pid == gettid() && q.tgid == getpid());
	CHECK(q.had_mm == 1 && q.at_exit == 0);
	return 0;
}

static int t_resume_self(void) { return self_mode(RESUME); }
static int t_signal_self(void) { return self_mode(SIGNAL); }
static int t_signal_no_ipi_self(void) { return self_mode(SIGNAL_NO_IPI); }

static void *thread_adds(void *arg)
{
	struct krs_tw_req r = add(TW_ADD, 0, RESUME, 0, 1, 0x7777, 0);

	*(long *)arg = r.err == 0 && word == 0x7777 ? gettid() : -1;
	return NULL;
}

/* From a second thread of the process: the probe runs in that thread, not in the leader. */
static int t_resume_in_thread(void)
{
	pthread_t t;
	long tid = 0;
	struct krs_tw_rec q;

	word = 0;
	CHECK(pthread_create(&t, NULL, thread_adds, &tid) == 0);
	pthread_join(t, NULL);
	CHECK(tid > 0);
	q = query(0);
	CHECK(q.runs == 1 && q.pid == tid && q.tgid == getpid() && q.pid != getpid());
	return 0;
}

/* RESUME on another process blocked in the kernel: nothing runs until it returns. */
static int t_resume_other_waits(void)
{
	pid_t c = sleeping_child(0, 0x2222);
	struct krs_tw_req r;
	struct krs_tw_rec q;

	CHECK(wait_asleep(c) == 0);
	r = add(TW_ADD, c, RESUME, 0, 1, 0x2222, 0);
	CHECK(r.err == 0);
	msleep(300);
	CHECK(query(0).runs == 0);
	CHECK(ioctl(dev, TW_SLEEPERS) == 1);
	ioctl(dev, TW_RELEASE);
	CHECK(reap(c) == 0);
	q = query(0);
	CHECK(q.runs == 1 && q.pid == c && q.tgid == c && q.had_mm == 1);
	CHECK(word == 0);	/* our copy of the page is untouched */
	return 0;
}

/* SIGNAL interrupts an interruptible sleep in the kernel and runs in the sleeper. */
static int t_signal_interrupts_sleep(void)
{
	pid_t c = sleeping_child(-1, 0x3333);
	struct krs_tw_rec q;

	CHECK(wait_asleep(c) == 0);
	CHECK(add(TW_ADD, c, SIGNAL, 0, 1, 0x3333, 0).err == 0);
	CHECK(reap(c) == 0);	/* never released: the sleep returned EINTR */
	q = query(0);
	CHECK(q.runs == 1 && q.pid == c);
	return 0;
}

/* SIGNAL_NO_IPI sends no IPI, but it does wake an interruptible sleeper, like SIGNAL
 * (__set_notify_signal() calls wake_up_state(TASK_INTERRUPTIBLE)). */
static int t_signal_no_ipi_wakes_sleeper(void)
{
	pid_t c = sleeping_child(-1, 0x4444);

	CHECK(wait_asleep(c) == 0);
	CHECK(add(TW_ADD, c, SIGNAL_NO_IPI, 0, 1, 0x4444, 0).err == 0);
	CHECK(reap(c) == 0);	/* never released: the sleep returned EINTR */
	CHECK(query(0).runs == 1 && query(0).pid == c);
	return 0;
}

/* SIGNAL_NO_IPI on a process spinning in user space: runs at its next interrupt. */
static int t_signal_no_ipi_busy(void)
{
	int p[2];
	char b = 0;
	pid_t c;

	CHECK(pipe(p) == 0);
	word = 0;
	c = fork();
	if (c == 0) {
		struct timespec t0, t;

		write(p[1], &b, 1);
		clock_gettime(CLOCK_MONOTONIC, &t0);	/* vDSO: no kernel entry */
		do {
			if (word == 0x5555)
				_exit(0);
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while (t.tv_sec - t0.tv_sec < 10);
		_exit(4);
	}
	CHECK(read(p[0], &b, 1) == 1);
	close(p[0]);
	close(p[1]);
	CHECK(add(TW_ADD, c, SIGNAL_NO_IPI, 0, 1, 0x5555, 0).err == 0);
	CHECK(reap(c) == 0);
	CHECK(query(0).runs == 1 && query(0).pid == c);
	return 0;
}

/* H14: a held task that has exited and been reaped: -ESRCH, the callback comes back. */
static int t_exited_task_esrch(void)
{
	int p[2];
	pid_t c = reader_child(p, 0);
	struct krs_tw_req r;
	struct krs_tw_rec q;

	CHECK(c > 0);
	CHECK(ioctl(dev, TW_HOLD, c) == 0);
	release_reader(p);
	CHECK(reap(c) == 0);
	r = add(TW_ADD, -1, RESUME, 0, 1, 0x6666, 0);
	CHECK(r.err == -ESRCH && r.returned == 1);
	q = query(0);
	CHECK(q.runs == 0 && q.drops == 1);
	return 0;
}

/* H15: callbacks pending when a process exits run in its exit, without mm. */
static int t_exit_runs_pending(void)
{
	pid_t c = fork();
	struct krs_tw_rec q;

	if (c == 0) {
		int fd = open(DEVICE, O_RDWR);
		struct krs_tw_req r = { .slot = 0, .count = 3 };

		/* The file is released from this task's exit; the module queues 3 there. */
		if (fd < 0 || ioctl(fd, TW_ARM_ON_CLOSE, &r))
			_exit(5);
		_exit(0);
	}
	CHECK(reap(c) == 0);
	q = query(0);
	CHECK(q.runs == 3 && q.drops == 3 && q.pid == c);
	CHECK(q.at_exit == 3 && q.had_mm == 0);
	return 0;
}

/* The same queued from close(): they run before close() returns, with mm, not at exit. */
static int t_close_runs_before_return(void)
{
	int fd = open(DEVICE, O_RDWR);
	struct krs_tw_req r = { .slot = 0, .count = 2 };
	struct krs_tw_rec q;

	CHECK(fd >= 0);
	CHECK(ioctl(fd, TW_ARM_ON_CLOSE, &r) == 0);
	CHECK(close(fd) == 0);
	q = query(0);
	CHECK(q.runs == 2 && q.pid == gettid() && q.at_exit == 0 && q.had_mm == 2);
	return 0;
}

/* 1000 callbacks on this task and 1000 on a sleeping child: all run, all freed. */
static int t_thousand(void)
{
	int base = refcount();
	struct krs_tw_rec q;
	pid_t c;

	/* Earlier cases left nothing queued: only this program's open file may count. */
	CHECK(base == file_refs());
	CHECK(add(TW_ADD, 0, RESUME, 0, 1000, 0, 0).err == 0);
	q = query(0);
	CHECK(q.runs == 1000 && q.drops == 1000 && refcount() == base);
	c = sleeping_child(0, 0);
	CHECK(wait_asleep(c) == 0);
	CHECK(add(TW_ADD, c, RESUME, 1, 1000, 0, 0).err == 0);
	CHECK(refcount() == base + 1000);
	ioctl(dev, TW_RELEASE);
	CHECK(reap(c) == 0);
	q = query(1);
	CHECK(q.runs == 1000 && q.drops == 1000 && q.pid == c && refcount() == base);
	return 0;
}

/* H17: each pending callback holds a module reference until it has run. */
static int t_module_pinned(void)
{
	int base = refcount();
	pid_t c = sleeping_child(0, 0);

	CHECK(wait_asleep(c) == 0);
	CHECK(add(TW_ADD, c, RESUME, 0, 5, 0, 0).err == 0);
	CHECK(refcount() == base + 5);
	ioctl(dev, TW_RELEASE);
	CHECK(reap(c) == 0);
	CHECK(query(0).runs == 5 && refcount() == base);
	return 0;
}

/* H17: cancel takes the callback back; the task later runs an empty node that only frees. */
static int t_cancel_pending(void)
{
	int base = refcount();
	pid_t c = sleeping_child(0, 0);	/* the probe must not write its magic */
	struct krs_tw_rec q;

	CHECK(wait_asleep(c) == 0);
	CHECK(add(TW_ADD_CANCELABLE, c, RESUME, 0, 1, 0x8888, 0).err == 0);
	CHECK(ioctl(dev, TW_CANCEL) == 1);
	q = query(0);
	CHECK(q.runs == 0 && q.drops == 1);	/* dropped at cancel, in this task */
	CHECK(refcount() == base + 1);		/* the empty node is still queued */
	ioctl(dev, TW_RELEASE);
	CHECK(reap(c) == 0);
	CHECK(refcount() == base);
	CHECK(query(0).runs == 0);
	CHECK(ioctl(dev, TW_CANCEL) == -1 && errno == ENOENT);
	return 0;
}

/* A cancel after the callback ran gets nothing back. */
static int t_cancel_too_late(void)
{
	word = 0;
	CHECK(add(TW_ADD_CANCELABLE, 0, RESUME, 0, 1, 0x9999, 0).err == 0);
	CHECK(word == 0x9999);
	CHECK(ioctl(dev, TW_CANCEL) == 0);
	CHECK(query(0).runs == 1 && query(0).drops == 1);
	return 0;
}

/* H16: a kernel thread (kthreadd, pid 2) is refused with EINVAL, the callback handed back. */
static int t_kthread_refused(void)
{
	char comm[32] = "";
	int fd = open("/proc/2/comm", O_RDONLY);
	struct krs_tw_req r;

	CHECK(fd >= 0 && read(fd, comm, sizeof(comm) - 1) > 0);
	close(fd);
	CHECK(strncmp(comm, "kthreadd", 8) == 0);
	r = add(TW_ADD, 2, SIGNAL, 0, 1, 0xaaaa, 0);
	CHECK(r.err == -EINVAL && r.returned == 1);
	CHECK(query(0).runs == 0 && query(0).drops == 1);
	return 0;
}

/* An allocation failure (failslab) hands the callback back with ENOMEM. */
static int t_enomem_returns(void)
{
	struct krs_tw_req r = add(TW_ADD, 0, RESUME, 0, 1, 0xbbbb, 1);

	CHECK(r.err == -ENOMEM && r.returned == 1);
	CHECK(query(0).runs == 0 && query(0).drops == 1);
	return 0;
}

/* H17: rmmod is refused while a callback is pending, and works once it has run. */
static int t_rmmod_busy(void)
{
	int p[2];
	pid_t c = reader_child(p, 0xcccc);

	CHECK(c > 0);
	CHECK(wait_blocked(c) == 0);	/* in read(), not about to return to user mode */
	CHECK(add(TW_ADD, c, RESUME, 0, 1, 0xcccc, 0).err == 0);
	close(dev);	/* now only the pending callback holds the module */
	CHECK(syscall(SYS_delete_module, MODULE, O_NONBLOCK) == -1 && errno == EWOULDBLOCK);
	release_reader(p);
	CHECK(reap(c) == 0);
	CHECK(syscall(SYS_delete_module, MODULE, O_NONBLOCK) == 0);
	return 0;
}

/* Every case starts with empty records. */
static void reset_records(void)
{
	ioctl(dev, TW_RESET);
}

static const struct ktap_case cases[] = {
	{ "resume_runs_in_caller_before_return", t_resume_self },
	{ "signal_runs_in_caller_before_return", t_signal_self },
	{ "signal_no_ipi_runs_in_caller_before_return", t_signal_no_ipi_self },
	{ "resume_runs_in_calling_thread", t_resume_in_thread },
	{ "resume_waits_for_blocked_process", t_resume_other_waits },
	{ "signal_interrupts_interruptible_sleep", t_signal_interrupts_sleep },
	{ "signal_no_ipi_wakes_interruptible_sleep", t_signal_no_ipi_wakes_sleeper },
	{ "signal_no_ipi_reaches_busy_process", t_signal_no_ipi_busy },
	{ "exited_task_gives_esrch_and_callback_back", t_exited_task_esrch },
	{ "pending_at_exit_run_in_exit_without_mm", t_exit_runs_pending },
	{ "queued_in_close_run_before_return", t_close_runs_before_return },
	{ "thousand_callbacks_all_run_none_leaked", t_thousand },
	{ "pending_callbacks_pin_the_module", t_module_pinned },
	{ "cancel_turns_pending_into_free_only", t_cancel_pending },
	{ "cancel_after_run_gets_nothing", t_cancel_too_late },
	{ "kthread_target_refused", t_kthread_refused },
	{ "enomem_gives_callback_back", t_enomem_returns },
	{ "rmmod_refused_while_pending", t_rmmod_busy },
};

int main(void)
{
	return ktap_run(DEVICE, &dev, cases, sizeof(cases) / sizeof(cases[0]), reset_records, 300);
}
