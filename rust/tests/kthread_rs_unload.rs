// SPDX-License-Identifier: GPL-2.0

//! Module unload while self-ending threads are still finishing (H7, `spawn_detached` and
//! `ThreadGroup`). Loaded and unloaded by `scripts/guest-check.sh`, which checks from outside
//! what `rmmod` does:
//!
//! - `mode=1`: `threads` detached threads sleep `hold_ms`, then count themselves. Each holds a
//!   module reference, so `rmmod` is refused until they have ended (`refcnt` shows them).
//! - `mode=2`: the same threads in a `ThreadGroup` kept in the module's data. They hold no
//!   module reference; `rmmod` drops the group, which waits for them, so `rmmod` succeeds and
//!   returns only after every thread counted itself.
//!
//! At exit the module prints `kthread-rs unload: exit: N of M threads done`: a thread that
//! still ran after that would run freed module code, which KASAN reports.

use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{prelude::*, time::Delta};

#[path = "../kthread_rs/mod.rs"]
pub mod kthread_rs;

use kthread_rs::thread::{self, ThreadGroup};

module! {
    type: Unload,
    name: "kthread_rs_unload",
    authors: ["kthread-rs developers"],
    description: "kthread-rs: rmmod while detached and grouped threads finish",
    license: "GPL",
    params: {
        mode: u32 {
            default: 0,
            description: "0: nothing, 1: detached threads, 2: a ThreadGroup",
        },
        threads: u32 {
            default: 3,
            description: "threads to start (1..16)",
        },
        hold_ms: u32 {
            default: 1500,
            description: "how long each thread sleeps before it ends (ms, at most 10000)",
        },
    },
}

/// Threads that have finished their body.
static DONE: AtomicU32 = AtomicU32::new(0);

struct Unload {
    threads: u32,
    starter: Option<thread::Thread<u32>>,
    group: Option<ThreadGroup>,
}

fn body(i: u32, hold_ms: u32) -> impl FnOnce(&thread::Context<'_>) + Send + 'static {
    move |ctx| {
        ctx.sleep(Delta::from_millis(i64::from(hold_ms)));
        DONE.fetch_add(1, Ordering::SeqCst);
        pr_info!("kthread-rs unload: thread {i} done\n");
    }
}

impl kernel::Module for Unload {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let mode = *module_parameters::mode.value();
        let threads = *module_parameters::threads.value();
        let hold_ms = *module_parameters::hold_ms.value();
        if !(1..=16).contains(&threads) || hold_ms > 10_000 || mode > 2 {
            return Err(EINVAL);
        }
        let mut this = Unload {
            threads: 0,
            starter: None,
            group: None,
        };
        match mode {
            // Detached threads need a live module (`EBUSY` while `init` runs): an owned
            // starter thread retries until `init` has returned, as a driver would.
            1 => {
                this.threads = threads;
                this.starter = Some(thread::spawn(fmt!("krs-unload-st"), move |ctx| {
                    let mut refused = 0u32;
                    for i in 0..threads {
                        while let Err(e) =
                            thread::spawn_detached(fmt!("krs-unload-d/{i}"), body(i, hold_ms))
                        {
                            if e != EBUSY || ctx.sleep(Delta::from_millis(1)) == thread::Wake::Stop
                            {
                                return refused;
                            }
                            refused += 1;
                        }
                    }
                    pr_info!("kthread-rs unload: {threads} detached threads started\n");
                    refused
                })?);
            }
            2 => {
                let group = ThreadGroup::new()?;
                for i in 0..threads {
                    group.spawn(fmt!("krs-unload-g/{i}"), body(i, hold_ms))?;
                    this.threads += 1;
                }
                this.group = Some(group);
            }
            _ => {}
        }
        pr_info!(
            "kthread-rs unload: mode {mode}, {} threads started\n",
            this.threads
        );
        Ok(this)
    }
}

impl Drop for Unload {
    fn drop(&mut self) {
        if let Some(Ok(thread::Exit::Returned(n))) = self.starter.take().map(|t| t.stop()) {
            pr_info!("kthread-rs unload: spawn_detached refused {n} times while init ran\n");
        }
        // Waits for the group's threads (mode 2).
        drop(self.group.take());
        pr_info!(
            "kthread-rs unload: exit: {} of {} threads done\n",
            DONE.load(Ordering::SeqCst),
            self.threads
        );
    }
}
