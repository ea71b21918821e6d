#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`: the Rust abstractions against the C API, side by side in one VM boot. Prints
# the table of medians and Rust/C ratios, and writes it to out/bench/bench.{txt,json}.
# BENCH_ROUNDS (default 5) sets the rounds; benchmarks never fail a test run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KDIR=${KDIR:-$(bash "$KRS_ROOT/scripts/setup.sh" | tail -n1)}
export KDIR
bash "$KRS_ROOT/scripts/kmake.sh" modules > /dev/null
out=$KRS_ROOT/out/bench
rm -rf "$out"; mkdir -p "$out"
rounds=${BENCH_ROUNDS:-5}
krs_phase "bench: $rounds rounds of C then Rust, in one boot"
bash "$KRS_ROOT/scripts/vm-run.sh" "$KDIR" "$out" "$KRS_ROOT/scripts/guest-bench.sh" "$out" "$rounds"
mode=TCG; [ "${KVM:-0}" = 1 ] && mode=KVM
python3 "$KRS_ROOT/scripts/bench-report.py" "$out" "$(basename "$KDIR")" "$mode"
