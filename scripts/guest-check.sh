#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the virtme-ng guest, as root: load each test module (its KUnit suites run at
# load), save the KTAP, scan kmemleak while the modules are loaded (so that leak backtraces
# still name module code), unload, and save the whole dmesg.
# Usage: guest-check.sh OUTDIR MODULE.ko...
set -u
out=$1; shift
dbg=/sys/kernel/debug
mountpoint -q $dbg || mount -t debugfs none $dbg
dmesg -n 1                      # keep the console quiet; everything is read back from dmesg
echo clear > $dbg/kmemleak 2>/dev/null  # forget boot-time reports: only ours count
# failslab for tests that opt in through current->fail_nth: GFP_KERNEL allocations count too,
# and no stack dump per injected failure. Nothing fails unless a test asks for it.
if [ -d $dbg/failslab ]; then
	echo N > $dbg/failslab/ignore-gfp-wait
	echo 0 > $dbg/failslab/verbose
fi
echo "kthread-rs: guest up, $(nproc) CPUs, $(uname -r)" > /dev/kmsg

loaded=
for ko in "$@"; do
	name=$(basename "$ko" .ko)
	echo "kthread-rs: insmod $name" > /dev/kmsg
	before=$(ls $dbg/kunit 2>/dev/null)
	if insmod "$ko"; then
		loaded="$name $loaded"
		for s in $(ls $dbg/kunit 2>/dev/null); do
			echo "$before" | grep -qx "$s" && continue
			cat "$dbg/kunit/$s/results" > "$out/ktap.$name.$s"
		done
	else
		echo "insmod $name failed: $?" >> "$out/errors"
	fi
done

# kmemleak reports only objects older than 5 s, and needs two scans to be sure.
if [ -e $dbg/kmemleak ]; then
	sleep 6
	echo scan > $dbg/kmemleak; sleep 1; echo scan > $dbg/kmemleak
	cat $dbg/kmemleak > "$out/kmemleak.loaded"
fi
for name in $loaded; do
	echo "kthread-rs: rmmod $name" > /dev/kmsg
	rmmod "$name" || echo "rmmod $name failed" >> "$out/errors"
done
if [ -e $dbg/kmemleak ]; then
	sleep 6
	echo scan > $dbg/kmemleak; sleep 1; echo scan > $dbg/kmemleak
	cat $dbg/kmemleak > "$out/kmemleak.unloaded"
fi
echo "kthread-rs: guest done" > /dev/kmsg
dmesg > "$out/dmesg"
touch "$out/done"
