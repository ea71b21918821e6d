#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the guest for `make run` / `make soak`: one stress run (CPU hotplug every 3 s,
# failslab on), then a kmemleak scan, and the dmesg.
# Usage: guest-run.sh OUTDIR DURATION [PARAM=VALUE...]
set -u
out=$1 duration=$2; shift 2
dbg=/sys/kernel/debug
mountpoint -q $dbg || mount -t debugfs none $dbg
dmesg -n 1
echo clear > $dbg/kmemleak 2>/dev/null
if [ -d $dbg/failslab ]; then
	echo N > $dbg/failslab/ignore-gfp-wait
	echo 0 > $dbg/failslab/verbose
fi
echo "kthread-rs: guest up, $(nproc) CPUs, $(uname -r)" > /dev/kmsg
stat=$(( duration >= 120 ? 30 : 10 ))
why=$(bash "$(dirname "$0")/guest-stress.sh" "$out" run "$duration" 0 stat_interval=$stat \
	onoff_interval=3000 onoff_holdoff=3 "$@")
r=$?
{
	echo "KTAP version 1"
	echo "1..1"
	[ $r = 0 ] && echo "ok 1 stress_${duration}s" || echo "not ok 1 stress_${duration}s # $why"
} > "$out/ktap.guest.stress"
if [ -e $dbg/kmemleak ]; then
	sleep 6
	echo scan > $dbg/kmemleak; sleep 1; echo scan > $dbg/kmemleak
	cat $dbg/kmemleak > "$out/kmemleak.unloaded"
fi
dmesg > "$out/dmesg"
touch "$out/done"
