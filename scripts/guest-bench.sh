#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the guest for `make bench`: load the C reference and the Rust benchmark modules
# alternately (C, Rust, C, Rust, ...), ROUNDS rounds; each load runs every benchmark once and
# is refused on purpose (EAGAIN) when done. Then, per round, the task work pair: each module
# stays loaded while the user program BENCH_TW drives it. Saves dmesg, the guest's CPU model
# and clocksource. Every load and the user program run on CPU 0: which CPU the caller starts
# on otherwise moves thread creation between two costs (by about 7%) from boot to boot.
# Usage: guest-bench.sh OUTDIR ROUNDS MODDIR BENCH_TW
set -u
out=$1 rounds=$2 mod=$3 tw=$4
dmesg -n 1
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //' > "$out/cpu"
nproc >> "$out/cpu"
cat /sys/devices/system/clocksource/clocksource0/current_clocksource >> "$out/cpu"
for r in $(seq "$rounds"); do
	for m in kthread_rs_bench_c kthread_rs_bench; do
		echo "kthread-rs: bench round $r $m" > /dev/kmsg
		echo "$(cut -d' ' -f1 /proc/uptime)s round $r $m" >> "$out/progress"
		taskset -c 0 insmod "$mod/$m.ko" round="$r" 2> /dev/null
	done
	for impl in c rust; do
		m=kthread_rs_bench_tw_c dev=/dev/krs-bench-tw-c
		[ "$impl" = rust ] && m=kthread_rs_bench_tw dev=/dev/krs-bench-tw-rust
		insmod "$mod/$m.ko" &&
			taskset -c 0 "$tw" "$dev" "$impl" "$r" 2000 ||
			echo "krs-bench: impl=$impl failed: task work round $r" > /dev/kmsg
		rmmod "$m"
	done
done
dmesg > "$out/dmesg"
touch "$out/done"
