#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the guest booted from kunit.py's kernel (the series applied): load the module that
# leaks its threads, unload it, check that the kernel crate reaped them. KTAP to OUTDIR/ktap.
set -u
out=$1
exec > "$out/ktap"
n=0
result() {	# result OK NAME [COMMENT]
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n $2${3:+ # $3}"; else echo "not ok $n $2${3:+ # $3}"; fi
}
threads() { ps -e -o comm= | grep -c '^kthread_leak' || true; }
echo "KTAP version 1"
echo "1..4"
echo "kthread-rs: in-tree reaper begins" > /dev/kmsg
insmod "$out/kthread_leak.ko"; result $? insmod_module_that_leaks
sleep 1
before=$(threads)
[ "$before" -ge 3 ]; result $? leaked_threads_run "threads=$before"
rmmod kthread_leak; result $? rmmod_with_leaked_handles
sleep 1
after=$(threads)
dmesg | sed -n '/kthread-rs: in-tree reaper begins/,$p' > "$out/dmesg"
# The marker must be there, or the splat count below would prove nothing.
marked=$(grep -c 'kthread-rs: in-tree reaper begins' "$out/dmesg" || true)
splat=$(grep -cE 'BUG:|Oops|WARNING:|KASAN|general protection|Kernel panic|unable to handle|circular locking' \
	"$out/dmesg" || true)
[ "$after" = 0 ] && [ "$marked" = 1 ] && [ "$splat" = 0 ]
result $? reaped_at_going "threads=$after dmesg-marker=$marked splats=$splat"
touch "$out/done"
