#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make run` / `make soak`: boot the test kernel, run the stress sample for DURATION seconds
# (default 60; `make soak` 600) with its user-space companion, CPU hotplug and injected
# allocation failures, and print its report, the dmesg splat check and the kmemleak check.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KDIR=${KDIR:-$(bash "$KRS_ROOT/scripts/setup.sh" | tail -n1)}
export KDIR
duration=${DURATION:-60}
[[ "$duration" =~ ^[0-9]+$ ]] && [ "$duration" -ge 1 ] || krs_die "DURATION must be a number of seconds"
bash "$KRS_ROOT/scripts/kmake.sh" modules > /dev/null
out=$KRS_ROOT/out/run
rm -rf "$out"; mkdir -p "$out/user"
gcc -O2 -Wall -Wextra -Werror -pthread -o "$out/user/kthread_rs_stress_user" \
	"$KRS_ROOT/samples/user/kthread_rs_stress_user.c"
krs_phase "run: stress sample for ${duration}s (params: ${STRESS_PARAMS:-defaults})"
VM_TIMEOUT=$((duration + 600)) bash "$KRS_ROOT/scripts/vm-run.sh" "$KDIR" "$out" \
	"$KRS_ROOT/scripts/guest-run.sh" "$out" "$duration" ${STRESS_PARAMS:-} || true
# The report, without the dmesg time stamps and module prefix.
grep -h 'kthread-rs stress' "$out"/stress.*.log 2> /dev/null |
	sed -e 's/^\[ *[0-9.]*\] //' -e 's/^kthread_rs_stress: //' || true
python3 "$KRS_ROOT/scripts/summarize.py" "$out"
