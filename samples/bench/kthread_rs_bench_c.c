// SPDX-License-Identifier: GPL-2.0
/*
 * kthread-rs benchmarks, the C reference: the same operations as kthread_rs_bench.rs, written
 * directly against the C API of kernel/kthread.c. `make bench` loads this module and the Rust
 * one alternately, several rounds, in one boot; each load runs every benchmark once, at init,
 * prints one line per operation and fails the load on purpose (-EAGAIN), so that nothing stays.
 *
 * Lines: "krs-bench: impl=c round=R op=OP n=N median_ns=M p99_ns=P" and "... size=NAME bytes=B".
 */
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/kthread.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/vmstat.h>
#include <linux/sort.h>
#include <linux/workqueue.h>

static int round;
module_param(round, int, 0444);
MODULE_PARM_DESC(round, "round number, printed with the results");

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *op, u64 *ns, int n)
{
	sort(ns, n, sizeof(*ns), cmp_u64, NULL);
	pr_info("krs-bench: impl=c round=%d op=%s n=%d median_ns=%llu p99_ns=%llu\n", round, op,
		n, ns[n / 2], ns[(n * 99) / 100]);
}

/* -- threads ------------------------------------------------------------------------------ */

static int ret_fn(void *data)
{
	return 0;
}

static int wait_fn(void *data)
{
	while (!kthread_should_stop()) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (!kthread_should_stop())
			schedule();
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

/* create + wake + stop of a thread whose body returns at once. */
static void bench_create_stop(const char *op, u64 *ns, int n)
{
	for (int i = 0; i < n; i++) {
		u64 t0 = ktime_get_ns();
		struct task_struct *t = kthread_create(ret_fn, NULL, "krs-bc-%d", i);

		if (IS_ERR(t)) {
			ns[i] = 0;
			continue;
		}
		get_task_struct(t);
		wake_up_process(t);
		kthread_stop(t);
		put_task_struct(t);
		ns[i] = ktime_get_ns() - t0;
	}
	report(op, ns, n);
}

struct thread_data {
	struct completion returned;
	int result;
};

static int data_fn(void *data)
{
	struct thread_data *d = data;

	d->result = 0;
	complete_all(&d->returned);
	return 0;
}

/* The C pattern that matches what the Rust handle keeps per thread: a data block with a
 * completion and a result slot, allocated for the thread and freed after the stop. */
static void bench_create_stop_data(u64 *ns, int n)
{
	for (int i = 0; i < n; i++) {
		u64 t0 = ktime_get_ns();
		struct thread_data *d = kzalloc(sizeof(*d), GFP_KERNEL);
		struct task_struct *t;

		init_completion(&d->returned);
		t = kthread_create(data_fn, d, "krs-bd-%d", i);
		if (IS_ERR(t)) {
			kfree(d);
			ns[i] = 0;
			continue;
		}
		get_task_struct(t);
		wake_up_process(t);
		kthread_stop(t);
		put_task_struct(t);
		kfree(d);
		ns[i] = ktime_get_ns() - t0;
	}
	report("create_stop_with_data", ns, n);
}

/* Free memory, slab and kernel stacks, in bytes (/proc/meminfo's MemFree, Slab, KernelStack;
 * per-CPU deltas not yet folded in are missed). */
static void mem_snapshot(u64 m[3])
{
	struct sysinfo info;

	si_meminfo(&info);
	m[0] = (u64)info.freeram * info.mem_unit;
	m[1] = (u64)(global_node_page_state_pages(NR_SLAB_UNRECLAIMABLE_B) +
		     global_node_page_state_pages(NR_SLAB_RECLAIMABLE_B)) * PAGE_SIZE;
	m[2] = (u64)global_node_page_state(NR_KERNEL_STACK_KB) * 1024;
}

/* The same with `pop` other threads alive. */
static void bench_population(int pop, u64 *ns, int n)
{
	struct task_struct **ts = kvcalloc(pop, sizeof(*ts), GFP_KERNEL);
	u64 before[3], after[3];
	char op[32];
	int made = 0;

	if (!ts)
		return;
	mem_snapshot(before);
	for (; made < pop; made++) {
		ts[made] = kthread_run(wait_fn, NULL, "krs-bp-%d", made);
		if (IS_ERR(ts[made]))
			break;
		get_task_struct(ts[made]);
	}
	if (pop == 10000) {
		mem_snapshot(after);
		pr_info("krs-bench: impl=c round=%d size=pop10000_memory_per_thread bytes=%llu\n",
			round, before[0] > after[0] ? div_u64(before[0] - after[0], pop) : 0);
		pr_info("krs-bench: impl=c round=%d size=pop10000_slab_per_thread bytes=%llu\n",
			round, after[1] > before[1] ? div_u64(after[1] - before[1], pop) : 0);
		pr_info("krs-bench: impl=c round=%d size=pop10000_stack_per_thread bytes=%llu\n",
			round, after[2] > before[2] ? div_u64(after[2] - before[2], pop) : 0);
	}
	snprintf(op, sizeof(op), "create_stop_pop%d", pop);
	bench_create_stop(op, ns, n);
	while (made--) {
		kthread_stop(ts[made]);
		put_task_struct(ts[made]);
	}
	kvfree(ts);
}

static int park_fn(void *data)
{
	while (!kthread_should_stop()) {
		if (kthread_should_park())
			kthread_parkme();
		cond_resched();
	}
	return 0;
}

/* kthread_park + kthread_unpark of a busy thread, bound to CPU 1 (the caller runs on CPU 0;
 * unbound, the thread's CPU would change the cost from boot to boot). */
static void bench_park(u64 *ns, int n)
{
	struct task_struct *t;

	t = kthread_create_on_cpu(park_fn, NULL, cpu_online(1) ? 1 : 0, "krs-bc-park/%u");
	if (IS_ERR(t))
		return;
	get_task_struct(t);
	wake_up_process(t);
	for (int i = 0; i < n; i++) {
		u64 t0 = ktime_get_ns();

		kthread_park(t);
		kthread_unpark(t);
		ns[i] = ktime_get_ns() - t0;
	}
	kthread_stop(t);
	put_task_struct(t);
	report("park_unpark", ns, n);
}

/* kthread_park + kthread_unpark of a per-CPU set: one busy thread bound to each online CPU
 * (kthread_create_on_cpu), all parked, then all unparked. */
static void bench_park_percpu(u64 *ns, int n)
{
	struct task_struct *ts[NR_CPUS];
	unsigned int cpu;
	int made = 0;

	for_each_online_cpu(cpu) {
		struct task_struct *t = kthread_create_on_cpu(park_fn, NULL, cpu, "krs-bc-pcpu/%u");

		if (IS_ERR(t))
			break;
		get_task_struct(t);
		wake_up_process(t);
		ts[made++] = t;
	}
	for (int i = 0; i < n; i++) {
		u64 t0 = ktime_get_ns();

		for (int j = 0; j < made; j++)
			kthread_park(ts[j]);
		for (int j = 0; j < made; j++)
			kthread_unpark(ts[j]);
		ns[i] = ktime_get_ns() - t0;
	}
	for (int j = 0; j < made; j++) {
		kthread_stop(ts[j]);
		put_task_struct(ts[j]);
	}
	report("park_unpark_percpu_set", ns, n);
}

/* -- kthread_worker ----------------------------------------------------------------------- */

struct timed_work {
	struct kthread_work work;
	struct kthread_delayed_work dwork;
	struct work_struct wq_work;
	u64 queued, ran;
	struct completion done;
};

static void timed_fn(struct kthread_work *w)
{
	struct timed_work *tw = container_of(w, struct timed_work, work);

	tw->ran = ktime_get_ns();
	complete(&tw->done);
}

static void timed_delayed_fn(struct kthread_work *w)
{
	struct timed_work *tw = container_of(w, struct timed_work, dwork.work);

	tw->ran = ktime_get_ns();
	complete(&tw->done);
}

static void timed_wq_fn(struct work_struct *w)
{
	struct timed_work *tw = container_of(w, struct timed_work, wq_work);

	tw->ran = ktime_get_ns();
	complete(&tw->done);
}

/* queue -> run latency: kind 0 kthread_work, 1 delayed work with zero delay, 2 system_wq. */
static void bench_queue_run(struct kthread_worker *kw, int kind, u64 *ns, int n)
{
	static const char *const ops[] = { "queue_run", "queue_delayed0_run", "workqueue_queue_run" };
	struct timed_work tw;

	kthread_init_work(&tw.work, timed_fn);
	kthread_init_delayed_work(&tw.dwork, timed_delayed_fn);
	INIT_WORK_ONSTACK(&tw.wq_work, timed_wq_fn);
	init_completion(&tw.done);
	for (int i = 0; i < n; i++) {
		reinit_completion(&tw.done);
		tw.queued = ktime_get_ns();
		if (kind == 0)
			kthread_queue_work(kw, &tw.work);
		else if (kind == 1)
			kthread_queue_delayed_work(kw, &tw.dwork, 0);
		else
			queue_work(system_wq, &tw.wq_work);
		wait_for_completion(&tw.done);
		ns[i] = tw.ran - tw.queued;
	}
	kthread_flush_worker(kw);
	flush_work(&tw.wq_work);
	destroy_work_on_stack(&tw.wq_work);
	report(ops[kind], ns, n);
}

/* kthread_cancel_delayed_work_sync() of a delayed work whose timer is pending (10 s). */
static void bench_cancel_delayed(struct kthread_worker *kw, u64 *ns, int n)
{
	struct timed_work tw;

	kthread_init_delayed_work(&tw.dwork, timed_delayed_fn);
	init_completion(&tw.done);
	for (int i = 0; i < n; i++) {
		u64 t0;
		bool was_pending;

		kthread_queue_delayed_work(kw, &tw.dwork, 10 * HZ);
		t0 = ktime_get_ns();
		was_pending = kthread_cancel_delayed_work_sync(&tw.dwork);
		ns[i] = ktime_get_ns() - t0;
		if (!was_pending)
			pr_err("krs-bench: impl=c failed: the delayed work was not pending\n");
	}
	report("cancel_sync_pending_delayed", ns, n);
}

#define BATCH 2000

struct count_work {
	struct kthread_work work;
	atomic_t *left;
	struct completion *done;
};

static void count_fn(struct kthread_work *w)
{
	struct count_work *cw = container_of(w, struct count_work, work);

	if (atomic_dec_and_test(cw->left))
		complete(cw->done);
}

struct producer {
	struct kthread_worker *kw;
	struct count_work *works;
	int n;
};

static int producer_fn(void *data)
{
	struct producer *p = data;

	for (int i = 0; i < p->n; i++)
		kthread_queue_work(p->kw, &p->works[i].work);
	return 0;
}

/* Throughput: BATCH works queued by `producers` threads, timed until the last has run; the
 * per-work cost in ns (lower is better). */
static void bench_throughput(struct kthread_worker *kw, int producers, u64 *ns, int rounds)
{
	struct count_work *works = kvcalloc(BATCH, sizeof(*works), GFP_KERNEL);
	DECLARE_COMPLETION_ONSTACK(done);
	atomic_t left;
	char op[32];

	if (!works)
		return;
	for (int i = 0; i < BATCH; i++) {
		kthread_init_work(&works[i].work, count_fn);
		works[i].left = &left;
		works[i].done = &done;
	}
	for (int r = 0; r < rounds; r++) {
		struct producer ps[2];
		struct task_struct *ts[2];
		u64 t0;

		atomic_set(&left, BATCH);
		reinit_completion(&done);
		for (int p = 0; p < producers; p++) {
			ps[p] = (struct producer){ kw, works + p * (BATCH / producers), BATCH / producers };
			ts[p] = kthread_create(producer_fn, &ps[p], "krs-bc-prod/%d", p);
			get_task_struct(ts[p]);
		}
		t0 = ktime_get_ns();
		for (int p = 0; p < producers; p++)
			wake_up_process(ts[p]);
		wait_for_completion(&done);
		ns[r] = (ktime_get_ns() - t0) / BATCH;
		for (int p = 0; p < producers; p++) {
			kthread_stop(ts[p]);
			put_task_struct(ts[p]);
		}
	}
	kvfree(works);
	snprintf(op, sizeof(op), "throughput_%dprod_ns_per_work", producers);
	report(op, ns, rounds);
}

static int __init bench_init(void)
{
	u64 *ns = kvcalloc(1000, sizeof(*ns), GFP_KERNEL);
	struct kthread_worker *kw;

	if (!ns)
		return -ENOMEM;
	bench_create_stop("create_stop", ns, 200);
	bench_create_stop_data(ns, 200);
	bench_population(10, ns, 100);
	bench_population(100, ns, 100);
	bench_population(1000, ns, 100);
	bench_population(10000, ns, 100);
	bench_park(ns, 500);
	bench_park_percpu(ns, 300);
	kw = kthread_run_worker(0, "krs-bc-worker");
	if (!IS_ERR(kw)) {
		bench_queue_run(kw, 0, ns, 1000);
		bench_queue_run(kw, 1, ns, 300);
		bench_cancel_delayed(kw, ns, 300);
		bench_queue_run(kw, 2, ns, 1000);
		bench_throughput(kw, 1, ns, 15);
		bench_throughput(kw, 2, ns, 15);
		kthread_destroy_worker(kw);
	}
	pr_info("krs-bench: impl=c round=%d size=thread_handle bytes=%zu\n", round,
		sizeof(struct task_struct *));
	pr_info("krs-bench: impl=c round=%d size=per_thread_alloc bytes=%zu\n", round,
		sizeof(struct thread_data));	/* the with_data pattern; 0 for the bare one */
	pr_info("krs-bench: impl=c round=%d size=worker_handle bytes=%zu\n", round,
		sizeof(struct kthread_worker *));
	pr_info("krs-bench: impl=c round=%d size=work bytes=%zu\n", round,
		sizeof(struct kthread_work));
	pr_info("krs-bench: impl=c round=%d size=delayed_work bytes=%zu\n", round,
		sizeof(struct kthread_delayed_work));
	kvfree(ns);
	return -EAGAIN;	/* done: do not stay loaded */
}
module_init(bench_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kthread-rs: benchmarks of the C kthread API (reference for the Rust one)");
