#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`: the Rust abstractions against the C API, side by side in one VM boot. Prints
# the table of medians and Rust/C ratios, and writes it to out/bench/bench.{txt,json}.
#
# BENCH_KERNEL=production (default) boots the benchmark kernel (no debugging; built on first
# use by scripts/build-kernel.sh --bench, cached like the test kernel); BENCH_KERNEL=debug
# boots the test kernel (KASAN, lockdep, kmemleak). ICOUNT=1 (the default on the production
# kernel) runs QEMU with `-icount shift=0,sleep=off`: guest time advances one nanosecond per
# guest instruction, so a figure counts instructions and does not depend on what else the host
# runs; ICOUNT=0 (the default on the debug kernel, where one boot of one round took 18 minutes
# with icount) gives wall time. BENCH_ROUNDS (default 5) sets the rounds per boot, BENCH_BOOTS
# (default 1) the boots; with several boots the report gives each boot's ratios and their spread.
# Benchmarks never fail a test run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kernel=${BENCH_KERNEL:-production}
case "$kernel" in
production) KDIR=$(bash "$KRS_ROOT/scripts/install-deps.sh" >&2 &&
	bash "$KRS_ROOT/scripts/build-kernel.sh" --bench | tail -n1) ;;
debug) KDIR=${KDIR:-$(bash "$KRS_ROOT/scripts/setup.sh" | tail -n1)} ;;
*) krs_die "BENCH_KERNEL is production or debug, not $kernel" ;;
esac
out=${BENCH_OUT:-$KRS_ROOT/out/bench}
rm -rf "$out"; mkdir -p "$out"
# Build the benchmark modules from a copy of the sources, so that the checkout's objects (built
# against the test kernel) stay as they are.
krs_phase "bench: modules against $(basename "$KDIR")"
copy=$out/src
krs_copy_sources "$copy" rust/kthread_rs samples/bench
KDIR=$KDIR KRS_M=$copy/samples/bench bash "$KRS_ROOT/scripts/kmake.sh" modules > "$out/build.log" 2>&1 ||
	{ tail -n 30 "$out/build.log" >&2; krs_die "the benchmark modules did not build"; }
gcc -O2 -Wall -Wextra -Werror -o "$out/kthread_rs_bench_tw" "$KRS_ROOT/samples/bench/user/kthread_rs_bench_tw.c"
rounds=${BENCH_ROUNDS:-5} boots=${BENCH_BOOTS:-1}
mode=TCG
[ "${KVM:-0}" = 1 ] && mode=KVM
icount_default=1
[ "$kernel" = debug ] && icount_default=0
if [ "${ICOUNT:-$icount_default}" = 1 ] && [ "${KVM:-0}" != 1 ]; then
	export VM_QEMU_OPTS="-icount shift=0,sleep=off"
	mode="TCG, icount shift=0 (1 ns = 1 guest instruction)"
fi
export VM_MEMORY=4G VM_TIMEOUT=${VM_TIMEOUT:-3600}
qemu=$(qemu-system-x86_64 --version | head -n1)
for b in $(seq "$boots"); do
	bo=$out/boot$b
	mkdir -p "$bo"
	krs_phase "bench: boot $b of $boots, $rounds rounds of C then Rust ($kernel kernel, $mode)"
	bash "$KRS_ROOT/scripts/vm-run.sh" "$KDIR" "$bo" "$KRS_ROOT/scripts/guest-bench.sh" "$bo" "$rounds" \
		"$copy/samples/bench" "$out/kthread_rs_bench_tw"
done
python3 "$KRS_ROOT/scripts/bench-report.py" "$out" "$(basename "$KDIR") ($kernel)" "$mode" "$qemu" "$boots"
