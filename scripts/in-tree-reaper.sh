#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# H21 in the kernel tree: build rust/tests/in_tree/kthread_leak.rs against kunit.py's kernel
# (the series applied; scripts/kunit.sh builds it), boot that kernel in virtme-ng, load the
# module (it leaks a running thread, a worker with pending delayed work and a per-CPU set), unload
# it, and check that the kernel crate's module notifier ended all of them, with no splat.
# Usage: in-tree-reaper.sh OUTDIR   (writes OUTDIR/ktap.guest.in_tree_reaper)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=$1
KSRC=$(bash "$KRS_ROOT/scripts/fetch-kernel.sh" | tail -n1)
KTEST=$(bash "$KRS_ROOT/scripts/build-kernel.sh" | tail -n1)
KU=$KRS_CACHE/kunit/$(basename "$KTEST")
[ -f "$KU/build/arch/x86/boot/bzImage" ] && [ -f "$KU/build/.krs-series" ] ||
	krs_die "no kernel with the series in $KU/build (run make kunit first)"
mod=$out/in-tree-mod
rm -rf "$mod"; mkdir -p "$mod"
cp "$KRS_ROOT/rust/tests/in_tree/kthread_leak.rs" "$mod/"
echo 'obj-m += kthread_leak.o' > "$mod/Kbuild"
krs_phase "in-tree reaper: building kthread_leak.ko against $KU/build"
# The build directory records the test kernel's paths (see scripts/kunit.sh).
krs_series_ns "$KU/src" "$KSRC" "$KU/build" "$KTEST" \
	make -C "$KSRC" O="$KTEST" M="$mod" $(krs_kmake_vars) modules > "$mod/build.log" 2>&1 ||
	{ tail -n 30 "$mod/build.log"; echo "kthread_leak did not build against the series" >> "$out/errors"; exit 0; }
# The kernel's built-in KUnit suites already ran under kunit.py: kunit.enable=0 skips them here.
krs_phase "in-tree reaper: booting kunit.py's kernel (TCG, 2 vCPUs)"
t0=$(date +%s)
timeout --kill-after=30 "${VM_TIMEOUT:-900}" vng --run "$KU/build" --disable-kvm --cpus 2 --memory 2G \
	--append "no5lvl kunit.enable=0" --rwdir "$mod" \
	--exec "$KRS_ROOT/scripts/guest-in-tree-reaper.sh $mod" < /dev/null > "$mod/console" 2>&1 || true
krs_phase "in-tree reaper: VM finished in $(( $(date +%s) - t0 ))s"
[ -f "$mod/done" ] || echo "the in-tree reaper VM run did not finish (see $mod/console)" >> "$out/errors"
cp "$mod/ktap" "$out/ktap.guest.in_tree_reaper" 2>/dev/null ||
	echo "the in-tree reaper VM run gave no results (see $mod/console)" >> "$out/errors"
