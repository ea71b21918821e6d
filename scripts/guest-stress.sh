#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the guest: one run of the stress sample with its user-space companion.
# Usage: guest-stress.sh OUTDIR NAME DURATION RMMOD_AFTER [PARAM=VALUE...]
#   DURATION     the module's `duration` (0: until rmmod)
#   RMMOD_AFTER  seconds after insmod to rmmod (0: wait for the verdict, then rmmod)
# Saves the run's dmesg to OUTDIR/stress.NAME.log. Exit 0 on PASS; otherwise prints why.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=$1 name=$2 duration=$3 rmmod_after=$4; shift 4
ko=$root/samples/rust/kthread_rs_stress.ko
companion=$out/user/kthread_rs_stress_user
log=$out/stress.$name.log
[ -e "$ko" ] && [ -x "$companion" ] || { echo "stress module or companion not built"; exit 1; }

"$companion" 4 > "$out/stress.$name.companion" &
cpid=$!
for _ in $(seq 50); do grep -q tw_pid= "$out/stress.$name.companion" && break; sleep 0.1; done
twargs=$(cat "$out/stress.$name.companion")

marker="kthread-rs: stress $name begins"
echo "$marker" > /dev/kmsg
rc=0
if ! insmod "$ko" duration="$duration" $twargs "$@"; then
	echo "insmod failed"
	rc=1
else
	if [ "$rmmod_after" -gt 0 ]; then
		sleep "$rmmod_after"
	else
		for _ in $(seq $(( (duration + 120) * 2 ))); do
			dmesg | sed -n "/$marker/,\$p" | grep -qE 'kthread-rs stress: (PASS|FAIL)' && break
			sleep 0.5
		done
	fi
	# rmmod is refused ("in use") while task work callbacks are pending: they run within
	# milliseconds, as the companion keeps leaving the kernel.
	tries=0
	while [ $tries -lt 100 ]; do
		tries=$((tries + 1))
		rmmod kthread_rs_stress 2> /dev/null && break
		sleep 0.1
	done
	echo "kthread-rs: stress $name: rmmod took $tries tries" > /dev/kmsg
	[ -d /sys/module/kthread_rs_stress ] && { echo "rmmod kept failing"; rc=1; }
fi
kill -KILL $cpid 2> /dev/null
wait $cpid 2> /dev/null
dmesg | sed -n "/$marker/,\$p" > "$log"
if [ $rc = 0 ]; then
	if grep -q 'kthread-rs stress: FAIL' "$log"; then
		grep -m1 -o 'kthread-rs stress: FAIL.*' "$log"; rc=1
	elif ! grep -q 'kthread-rs stress: PASS' "$log"; then
		echo "no verdict"; rc=1
	elif ! grep -q 'kthread-rs stress: final accounting' "$log"; then
		echo "no final accounting"; rc=1
	fi
fi
exit $rc
