// SPDX-License-Identifier: GPL-2.0
/*
 * The stress sample's user-space companion: one process whose threads keep leaving and
 * entering the kernel in every way that task work cares about: interruptible sleeps
 * (nanosleep, poll), busy loops in user mode, and yields. The stress module
 * (samples/rust/kthread_rs_stress.rs, parameters tw_pid and tw_threads) queues task work on
 * these threads in all notify modes.
 *
 * Usage: kthread_rs_stress_user NTHREADS
 * Prints "tw_pid=P tw_threads=N" once every thread runs (N spans the thread ids), then runs
 * until it is killed.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_barrier_t ready;
static pid_t tids[64];

static void spin_us(long us)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);	/* vDSO: stays in user mode */
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < us);
}

static void churn(unsigned int seed)
{
	for (;;) {
		struct timespec ts = { 0, 200000 + rand_r(&seed) % 1800000 };

		switch (rand_r(&seed) % 4) {
		case 0: nanosleep(&ts, NULL); break;
		case 1: spin_us(500); break;
		case 2: sched_yield(); break;
		default: poll(NULL, 0, 1); break;
		}
	}
}

static void *thread_fn(void *arg)
{
	unsigned int i = (unsigned int)(uintptr_t)arg;

	tids[i] = gettid();
	pthread_barrier_wait(&ready);
	churn(i + 1);
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4;
	pthread_t t;
	pid_t max_tid = getpid();

	if (n < 1 || n > 64) {
		fprintf(stderr, "usage: %s NTHREADS (1..64)\n", argv[0]);
		return 2;
	}
	pthread_barrier_init(&ready, NULL, n);
	for (int i = 1; i < n; i++)
		if (pthread_create(&t, NULL, thread_fn, (void *)(uintptr_t)i))
			return 1;
	tids[0] = gettid();
	pthread_barrier_wait(&ready);	/* every thread has stored its id */
	for (int i = 0; i < n; i++)
		if (tids[i] > max_tid)
			max_tid = tids[i];
	printf("tw_pid=%d tw_threads=%d\n", getpid(), max_tid - getpid() + 1);
	fflush(stdout);
	churn(1);
	return 0;
}
