#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the guest for `make bench`: load the C reference and the Rust benchmark modules
# alternately (C, Rust, C, Rust, ...), ROUNDS rounds; each load runs every benchmark once and
# is refused on purpose (EAGAIN) when done. Saves dmesg and the guest's CPU model.
# Usage: guest-bench.sh OUTDIR ROUNDS
set -u
out=$1 rounds=$2
root=$(cd "$(dirname "$0")/.." && pwd)
dmesg -n 1
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //' > "$out/cpu"
nproc >> "$out/cpu"
for r in $(seq "$rounds"); do
	for m in kthread_rs_bench_c kthread_rs_bench; do
		echo "kthread-rs: bench round $r $m" > /dev/kmsg
		insmod "$root/samples/bench/$m.ko" round="$r" 2> /dev/null
	done
done
dmesg > "$out/dmesg"
touch "$out/done"
