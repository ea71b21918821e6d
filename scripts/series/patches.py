# SPDX-License-Identifier: GPL-2.0
"""The split of the in-tree series: one entry per patch, in order (read by scripts/series.py).

Each patch must build on its own: `rust` lists the files (prefixes under rust/kernel/kthread/)
that it adds, `mods` the modules of rust/kernel/kthread/mod.rs that it declares, `edits` the
changes to existing kernel files, `add` new non-Rust files.
"""

SAMPLE = "samples/rust/rust_kthread.rs"
COVER = "scripts/series/cover-letter.txt"


def _after_line(anchor, new):
    def f(text):
        assert anchor in text, anchor
        return text.replace(anchor, anchor + new, 1)
    return f


def _lib_rs(text):
    import re
    lines = text.split("\n")
    idx = [i for i, l in enumerate(lines) if re.match(r"^pub mod [a-z_0-9]+;$", l)]
    pos = next((i for i in idx if lines[i] > "pub mod kthread;"), idx[-1] + 1)
    # Keep a `#[cfg(...)]` line with the module that follows it.
    if pos > 0 and lines[pos - 1].startswith("#["):
        pos -= 1
    lines.insert(pos, "pub mod kthread;")
    return "\n".join(lines)


def _maintainers(text):
    """A `RUST [KTHREAD]` entry, in the alphabetical place among the `RUST [...]` ones."""
    entry = ("RUST [KTHREAD]\n"
             "M:\tkthread-rs developers <kthread-rs@localhost>\n"
             "L:\trust-for-linux@vger.kernel.org\n"
             "S:\tMaintained\n"
             "F:\trust/kernel/kthread/\n"
             "F:\tsamples/rust/rust_kthread.rs\n\n")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("RUST [") and line > "RUST [KTHREAD]":
            break
    head = "\n".join(lines[:i]) + "\n"
    return head + entry + "\n".join(lines[i:])


PATCHES = [
    {
        "subject": "rust: bindings, error: add kthread headers and two error codes",
        "body": """
The kthread abstractions that follow call the functions of <linux/kthread.h>
(kthread_create_on_node(), kthread_stop(), kthread_park(), the
kthread_worker API) and set up CPU hotplug states for per-CPU threads. Both
headers reach the bindings only through other includes today; name them, as
<linux/task_work.h> and <linux/wait.h> already are.

They also return two error codes that the kernel crate has no constant for:
ESHUTDOWN (a kthread_worker that is being destroyed refuses new work) and
EDEADLK (a stop, flush or park that would wait for itself).
""",
        "edits": [
            ("rust/kernel/error.rs",
             _after_line('    declare_err!(ERANGE, "Math result not representable.");\n',
                         '    declare_err!(EDEADLK, "Resource deadlock would occur.");\n')),
            ("rust/kernel/error.rs",
             _after_line('    declare_err!(ETIMEDOUT, "Connection timed out.");\n',
                         '    declare_err!(ESHUTDOWN, "Cannot send after transport endpoint shutdown.");\n')),
            ("rust/bindings/bindings_helper.h",
             _after_line("#include <linux/cpumask.h>\n", "#include <linux/cpuhotplug.h>\n")),
            ("rust/bindings/bindings_helper.h",
             _after_line("#include <linux/jump_label.h>\n", "#include <linux/kthread.h>\n")),
        ],
    },
    {
        "subject": "rust: kthread: add kernel threads",
        "body": """
Add `kernel::kthread::thread`: owned kernel threads over kthread_create_on_node(), kthread_stop() and
kthread_park(). A `Thread<T>` handle stops and joins its thread when dropped, so a thread never
outlives the data it borrows or the module code it runs; `scope()` gives threads that borrow from the
caller's stack, `ParkableThread` adds parking, `PerCpuThreads` one bound thread per online CPU that
follows CPU hotplug, `spawn_detached()` and `ThreadGroup` threads that end on their own.

A thread is created stopped (`NewThread`), configured (bind, node, nice, FIFO, freezable, preferred
affinity), then started. Its body gets a `&Context`: should_stop(), parkme(), the freezer, use_mm()
and blkcg association, all of which only make sense on the thread itself.

Every thread is linked into a registry, per owning module (`&'static ThisModule`), from its creation
until it has exited. A module notifier ends, at MODULE_STATE_GOING, whatever a leaked handle
(`mem::forget`) left running, before the module's text is freed; the same registry refuses a stop or
join that would wait for itself through a cycle of threads (-EDEADLK).
""",
        "edits": [("rust/kernel/lib.rs", _lib_rs), ("MAINTAINERS", _maintainers)],
        "rust": ["sys.rs", "registry", "thread/"],
        "mods": ["sys", "registry", "thread"],
    },
    {
        "subject": "rust: kthread: add service threads",
        "body": """
Add `kernel::kthread::service`: a start that waits until the thread's initialisation has succeeded
or failed (`spawn_with_init()`, the kthread_run() + completion pattern of many drivers), and
wake-driven service threads (`spawn_service()`) that sleep until woken or stopped.
""",
        "rust": ["service.rs"],
        "mods": ["service"],
    },
    {
        "subject": "rust: kthread: add kthread_worker and its delayed work",
        "body": """
Add `kernel::kthread::worker`: a `Worker` owns a kthread_worker (kthread_create_worker_on_node() or
_on_cpu()) and destroys it, after flushing, when dropped. Work items are pinned `Work<T>` in an `Arc`:
queueing takes a reference that the run gives back, so an item is never freed while queued.
`DelayedWork<T>` adds kthread_queue_delayed_work(), kthread_mod_delayed_work() and
kthread_cancel_delayed_work_sync(); a worker that is shutting down refuses new work with -ESHUTDOWN.
""",
        "rust": ["worker/"],
        "mods": ["worker"],
    },
    {
        "subject": "rust: kthread: add task_work",
        "body": """
Add `kernel::kthread::task_work`: task_work_add() with TWA_RESUME, TWA_SIGNAL or TWA_SIGNAL_NO_IPI
for a callback that a user task runs in its own context before returning to user space. The callback
is boxed, owns a reference on its module until it has run, and is dropped unrun if the task exits
first; `add_cancelable()` keeps a handle that can take it back (task_work_cancel()).
""",
        "rust": ["task_work.rs", "task_work/"],
        "mods": ["task_work"],
    },
    {
        "subject": "rust: kthread: add KUnit tests",
        "body": """
A KUnit suite, rust_kernel_kthread, for what a built-in suite can reach: a thread's value, stop
of a sleeping thread, a thread dropped before it started, scoped threads that borrow the stack,
park and unpark, service wakes, a worker's work and delayed work, and task work refused on a
kernel thread. The documentation examples run as doctests as well.

The cases that need a user process, CPU hotplug, a freeze cycle or a module unload stay in the
out-of-tree suites of kthread-rs, which build these same sources as modules.
""",
        "rust": ["tests.rs"],
        "mods": ["tests"],
    },
    {
        "subject": "samples: rust: add a kthread sample",
        "body": """
A driver-shaped user of `kernel::kthread`: a service thread that polls, a parkable per-CPU set, a
kthread_worker with plain and delayed work, and task work queued to the loading process.
""",
        "edits": [
            ("samples/rust/Kconfig", _after_line("""	  the module will be called rust_minimal.

	  If unsure, say N.
""", """
config SAMPLE_RUST_KTHREAD
	tristate "Kernel threads"
	help
	  This option builds the Rust kernel thread sample: threads,
	  a kthread_worker and task_work used as a driver would.

	  To compile this as a module, choose M here:
	  the module will be called rust_kthread.

	  If unsure, say N.
""")),
            ("samples/rust/Makefile",
             _after_line("obj-$(CONFIG_SAMPLE_RUST_MINIMAL)		+= rust_minimal.o\n",
                         "obj-$(CONFIG_SAMPLE_RUST_KTHREAD)		+= rust_kthread.o\n")),
        ],
        "sample": True,
    },
]
