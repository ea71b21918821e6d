// SPDX-License-Identifier: GPL-2.0
/*
 * kthread-rs benchmarks, task work on a real user process, the C reference: the misc device
 * /dev/krs-bench-tw-c, whose ioctl queues one callback on the calling process with
 * task_work_add(TWA_RESUME). The callback runs on the way back to user mode, before the ioctl
 * returns; user/kthread_rs_bench_tw.c times it.
 *
 * The pattern is the one that makes C as safe as the Rust API: the callback owns an allocation
 * (its data) and a module reference (its code), both dropped when it has run, so that rmmod
 * cannot free the code of a queued callback.
 */
#include <linux/fs.h>
#include <linux/ioctl.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/task_work.h>
#include <linux/timekeeping.h>

#define TW_ADD _IO('k', 0x40)
#define TW_LAST _IO('k', 0x41)

static u64 queued, ran;

struct tw {
	struct callback_head head;
};

static void tw_fn(struct callback_head *head)
{
	WRITE_ONCE(ran, ktime_get_ns());
	kfree(container_of(head, struct tw, head));
	module_put(THIS_MODULE);
}

static long tw_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct tw *tw;
	int err;

	switch (cmd) {
	case TW_ADD:
		WRITE_ONCE(queued, ktime_get_ns());
		tw = kmalloc(sizeof(*tw), GFP_KERNEL);
		if (!tw)
			return -ENOMEM;
		if (!try_module_get(THIS_MODULE)) {
			kfree(tw);
			return -ENODEV;
		}
		init_task_work(&tw->head, tw_fn);
		err = task_work_add(current, &tw->head, TWA_RESUME);
		if (err) {
			kfree(tw);
			module_put(THIS_MODULE);
		}
		return err;
	case TW_LAST:
		return READ_ONCE(ran) - READ_ONCE(queued);
	}
	return -ENOTTY;
}

static const struct file_operations tw_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = tw_ioctl,
};

static struct miscdevice tw_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "krs-bench-tw-c",
	.fops = &tw_fops,
};

module_misc_device(tw_misc);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kthread-rs: task work benchmark of the C API (reference for the Rust one)");
