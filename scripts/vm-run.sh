#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Boot the test kernel in virtme-ng and run a guest script in it, with a bounded timeout.
# Usage: vm-run.sh KDIR OUTDIR GUEST-SCRIPT [ARGS...]
# TCG by default: KVM here is a nested KVM on which guests hang. KVM=1 opts in.
# VM_MEMORY (default 2G) sizes the guest; VM_QEMU_OPTS adds QEMU options (make bench: icount).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kdir=$1 out=$2; shift 2
timeout=${VM_TIMEOUT:-1200}
accel=(--disable-kvm) mode=TCG
[ "${KVM:-0}" = 1 ] && accel=() mode=KVM
[ -z "${VM_QEMU_OPTS:-}" ] || accel+=(--qemu-opts="$VM_QEMU_OPTS") mode="$mode, $VM_QEMU_OPTS"
mkdir -p "$out"
krs_phase "vm: booting $(basename "$kdir") ($mode, 2 vCPUs, timeout ${timeout}s)"
t0=$(date +%s)
set +e
timeout --kill-after=30 "$timeout" vng --run "$kdir" "${accel[@]}" --cpus 2 --memory "${VM_MEMORY:-2G}" \
	--append no5lvl --rwdir "$out" --exec "$*" < /dev/null > "$out/console" 2>&1
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
	krs_phase "vm: TIMEOUT after ${timeout}s (the guest hung or was too slow)"
	echo "the VM run hit its ${timeout}s timeout" >> "$out/errors"
else
	krs_phase "vm: finished in $(( $(date +%s) - t0 ))s (vng exit $rc)"
fi
[ -f "$out/done" ] || { tail -n 30 "$out/console" >&2; exit 1; }
