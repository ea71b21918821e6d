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

# Modules tested from user space: their program (out/user/<module>, built by check.sh) prints
# KTAP. It may unload its module (the task_work test checks that rmmod waits for callbacks).
for name in $loaded; do
	prog=$out/user/$name
	[ -x "$prog" ] || continue
	echo "kthread-rs: running user program $name" > /dev/kmsg
	"$prog" > "$out/ktap.guest.$name" 2> "$out/user.$name.log" ||
		echo "user program $name exited with $?" >> "$out/errors"
done

# Module unload with threads that end by themselves and handles dropped on their own thread
# (H7, H20), and the atomic-context probes (H22): scripts/guest-unload.sh, driving
# rust/tests/kthread_rs_unload.ko. Its cases that leak on purpose run after the kmemleak scans.
bash "$(dirname "$0")/guest-unload.sh" "$out" clean > "$out/ktap.guest.unload"

# The stress sample, short: a 20 s run with CPU hotplug and injected failures, a run stopped
# by rmmod in the middle, and a bad parameter refused at insmod.
if [ -e "$(dirname "$0")/../samples/rust/kthread_rs_stress.ko" ]; then
	st=$(dirname "$0")/guest-stress.sh
	{
		echo "KTAP version 1"
		echo "1..3"
		why=$(bash "$st" "$out" short 20 0 stat_interval=5 onoff_interval=2000 onoff_holdoff=2) &&
			echo "ok 1 stress_short_run_passes" || echo "not ok 1 stress_short_run_passes # $why"
		why=$(bash "$st" "$out" rmmod 0 8 stat_interval=4) && grep -q 'stopped by rmmod' "$out/stress.rmmod.log" &&
			echo "ok 2 stress_rmmod_mid_run_accounts" || echo "not ok 2 stress_rmmod_mid_run_accounts # $why"
		if ! insmod "$(dirname "$0")/../samples/rust/kthread_rs_stress.ko" stat_interval=0 2> /dev/null &&
			dmesg | tail -n 20 | grep -q 'bad parameter: stat_interval'; then
			echo "ok 3 stress_bad_parameter_refused"
		else
			rmmod kthread_rs_stress 2> /dev/null
			echo "not ok 3 stress_bad_parameter_refused"
		fi
	} > "$out/ktap.guest.stress"
fi

# H19: one real freeze cycle (tasks and kthreads frozen for 5 s, then thawed), while the
# thread test module's freezer probes run; they report at rmmod, checked below.
freeze_ok=
if [ -w /sys/power/pm_test ] && echo "$loaded" | grep -q kthread_rs_thread_test; then
	echo freezer > /sys/power/pm_test && echo mem > /sys/power/state && freeze_ok=1
	echo none > /sys/power/pm_test
fi

# kmemleak reports only objects older than 5 s, and needs two scans to be sure.
if [ -e $dbg/kmemleak ]; then
	sleep 6
	echo scan > $dbg/kmemleak; sleep 1; echo scan > $dbg/kmemleak
	cat $dbg/kmemleak > "$out/kmemleak.loaded"
fi
for name in $loaded; do
	[ -d /sys/module/$name ] || continue	# unloaded by its user program
	echo "kthread-rs: rmmod $name" > /dev/kmsg
	rmmod "$name" || echo "rmmod $name failed" >> "$out/errors"
done
if [ -e $dbg/kmemleak ]; then
	sleep 6
	echo scan > $dbg/kmemleak; sleep 1; echo scan > $dbg/kmemleak
	cat $dbg/kmemleak > "$out/kmemleak.unloaded"
fi
if echo "$loaded" | grep -q kthread_rs_thread_test; then
	line=$(dmesg | grep -o 'freezer probe: freezable frozen=-\?[0-9]* plain frozen=-\?[0-9]*' | tail -n1)
	f=$(echo "$line" | sed -n 's/.*freezable frozen=\(-\?[0-9]*\).*/\1/p')
	p=$(echo "$line" | sed -n 's/.*plain frozen=\(-\?[0-9]*\).*/\1/p')
	{
		echo "KTAP version 1"
		echo "1..2"
		if [ -n "$freeze_ok" ] && [ "${f:-0}" -ge 1 ]; then r=ok; else r="not ok"; fi
		echo "$r 1 freezer_cycle_freezes_freezable_thread # frozen=${f:-none} cycle=${freeze_ok:-failed}"
		if [ -n "$freeze_ok" ] && [ "${p:--1}" = 0 ]; then r=ok; else r="not ok"; fi
		echo "$r 2 freezer_cycle_skips_plain_thread # frozen=${p:-none}"
	} > "$out/ktap.guest.freezer"
fi
# Forgotten handles and reference cycles, then rmmod, and the same in a failing init (H21):
# their memory stays leaked, as forgetting means, so they come after the kmemleak scans; a
# crash, hang or splat still fails the run.
bash "$(dirname "$0")/guest-unload.sh" "$out" forget > "$out/ktap.guest.unload_forget"
echo "kthread-rs: guest done" > /dev/kmsg
dmesg > "$out/dmesg"
touch "$out/done"
