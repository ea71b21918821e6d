#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the guest: module unload cases, through rust/tests/kthread_rs_unload.ko (see its
# module documentation for the modes). Prints KTAP on stdout.
# Usage: guest-unload.sh OUTDIR clean|forget
#   clean   cases that leak nothing (the guest's kmemleak scans come after them)
#   forget  cases that leak on purpose (mem::forget, reference cycles: their memory stays, as
#           forgetting means), run after the kmemleak scans; crashes, hangs and splats count
set -u
out=$1 part=$2
ko=$(dirname "$0")/../rust/tests/kthread_rs_unload.ko
dbg=/sys/kernel/debug
n=0
echo "KTAP version 1"
case $part in clean) echo "1..9" ;; forget) echo "1..8" ;; *) exit 1 ;; esac
[ -e "$ko" ] || exit 0

result() {	# result OK NAME [COMMENT]
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n $2${3:+ # $3}"; else echo "not ok $n $2${3:+ # $3}"; fi
}
refcnt() { cat /sys/module/kthread_rs_unload/refcnt 2>/dev/null || echo gone; }
mark() { echo "kthread-rs: unload case $1" > /dev/kmsg; }
# The dmesg lines since the last mark.
since_mark() { dmesg | sed -n "/kthread-rs: unload case $1\$/,\$p"; }
wait_for() {	# wait_for CASE PATTERN [TENTHS]: until the pattern is in dmesg since the mark
	for _ in $(seq "${3:-100}"); do since_mark "$1" | grep -q "$2" && return 0; sleep 0.1; done
	return 1
}

# Times are generous: under TCG on a loaded host the guest can be ten times slower.
if [ "$part" = clean ]; then
# H7, detached threads: each holds a module reference, so rmmod is refused until they end.
mark detached
insmod "$ko" mode=1 threads=3 hold_ms=8000
for _ in $(seq 200); do [ "$(refcnt)" = 3 ] && break; sleep 0.05; done
held=$(refcnt)
[ "$held" = 3 ]; result $? detached_threads_hold_module_refs "refcnt=$held"
! rmmod kthread_rs_unload 2> /dev/null; result $? rmmod_refused_while_detached_threads_run "refcnt=$(refcnt)"
for _ in $(seq 600); do [ "$(refcnt)" = 0 ] && break; sleep 0.1; done
left=$(refcnt)
rmmod kthread_rs_unload && since_mark detached | grep -q 'unload: exit: 3 of 3 threads done'
result $? detached_threads_end_then_rmmod_succeeds "refcnt=$left"

# H7, a ThreadGroup in the module's data: rmmod waits for its threads.
mark group
insmod "$ko" mode=2 threads=3 hold_ms=3000
held=$(refcnt)
[ "$held" = 0 ]; result $? group_threads_hold_no_module_ref "refcnt=$held"
t0=$(date +%s%N)
rmmod kthread_rs_unload; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc = 0 ] && [ $ms -ge 1000 ] && since_mark group | grep -q 'unload: exit: 3 of 3 threads done'
result $? rmmod_waits_for_group_threads "rc=$rc waited=${ms}ms"

# H20: a thread drops its own handle and runs on: it holds a module reference (rmmod refused)
# until it has freed itself and left through module_put_and_kthread_exit().
mark self
insmod "$ko" mode=3 hold_ms=8000
wait_for self 'dropped its own handle' 300
held=$(refcnt)
refused=1; rmmod kthread_rs_unload 2> /dev/null || refused=0
[ "$held" = 1 ] && [ $refused = 0 ]; result $? self_dropped_thread_holds_the_module "refcnt=$held"
for _ in $(seq 600); do [ "$(refcnt)" = 0 ] && break; sleep 0.1; done
rmmod kthread_rs_unload && since_mark self | grep -q 'self-dropped thread is done'
result $? self_dropped_thread_ends_then_rmmod_succeeds "refcnt=$(refcnt)"

# H20: a worker dropped by its own work, a delayed work armed for 8 s: its teardown thread
# holds a module reference, so rmmod right after is refused (or waits) until it is done, and
# the teardown cancels the delayed work.
mark wself
insmod "$ko" mode=6 hold_ms=8000
wait_for wself 'dropped by its own work' 300
tries=0
until rmmod kthread_rs_unload 2> /dev/null; do
	tries=$((tries + 1)); [ $tries -ge 300 ] && break; sleep 0.1
done
sleep 8.5
[ ! -d /sys/module/kthread_rs_unload ] && ! since_mark wself | grep -q 'forgotten delayed work ran'
result $? worker_dropped_by_own_work_then_rmmod "rmmod retries=$tries"

# H22: each call that may sleep reports misuse from its entry, even when it fails at once.
mark atomic
insmod "$ko" mode=7 && rmmod kthread_rs_unload
win=$(since_mark atomic | sed -n '/expected splats begin/,/expected splats end/p')
reports=$(echo "$win" | grep -c 'BUG: sleeping function called from invalid context at .*kthread_rs/')
others=$(echo "$win" | grep -E 'BUG:|WARNING:' | grep -vc 'sleeping function called from invalid context at .*kthread_rs/')
[ "$reports" = 3 ] && [ "$others" = 0 ]
result $? may_sleep_calls_report_atomic_context "reports=$reports others=$others"
exit 0
fi

# forget: the cases that leak on purpose.
# H21: forgotten handles of every kind; rmmod succeeds at once, and the unload ends them:
# the delayed work armed for 8 s never runs after it (before it, on a very slow guest, it may),
# the never-started thread never runs.
mark forget
insmod "$ko" mode=4 hold_ms=8000
wait_for forget 'six handles forgotten' 300
held=$(refcnt)
mark forget-rmmod
rmmod kthread_rs_unload; rc=$?
[ $rc = 0 ] && [ "$held" = 0 ] && since_mark forget | grep -q 'a forgotten thread was stopped' &&
	since_mark forget | grep -q "a forgotten group's thread was stopped"
result $? forgotten_handles_ended_by_rmmod "rc=$rc refcnt=$held"
sleep 8.5
! since_mark forget-rmmod | grep -q 'forgotten delayed work ran' && ! since_mark forget | grep -q 'never started ran'
result $? forgotten_work_never_runs_after_unload
# The per-CPU set's hotplug state went with the module: a CPU hotplug cycle calls nothing of
# it (freed text would oops).
hot=1
if [ -w /sys/devices/system/cpu/cpu1/online ]; then
	echo 0 > /sys/devices/system/cpu/cpu1/online && echo 1 > /sys/devices/system/cpu/cpu1/online && hot=0
fi
result $hot cpu_hotplug_after_forgotten_set_unloaded
# The reaper's module notifier left the chain: another module's load and unload walk it.
mark after
insmod "$ko" mode=0 && rmmod kthread_rs_unload
result $? module_notifier_left_the_chain

# H21 in a failing init: insmod fails; the failed load ends what init leaked.
mark failinit
! insmod "$ko" mode=5 hold_ms=8000 2> /dev/null && [ ! -d /sys/module/kthread_rs_unload ] &&
	since_mark failinit | grep -q 'a forgotten thread was stopped'
result $? failed_init_ends_forgotten_handles
sleep 8.5
insmod "$ko" mode=0 && rmmod kthread_rs_unload && ! since_mark failinit | grep -q 'forgotten delayed work ran\|never started ran'
result $? failed_init_left_nothing_running
# Found by review: forgotten cycles through a worker (a worker held by its own armed delayed
# work; a thread that owns a worker whose delayed work holds the thread), and a forgotten
# thread that joins threads the unload may have stopped before they ran. rmmod must end them
# all, and not wait for itself.
for c in 8:wcycles 9:joins; do
	mode=${c%%:*} name=${c#*:}
	mark $name
	insmod "$ko" mode=$mode
	wait_for $name 'forgotten\|left to the unload' 300
	# In the background: an rmmod that waits for itself cannot be killed; give it 120 s.
	rmmod kthread_rs_unload & pid=$!
	for _ in $(seq 1200); do kill -0 $pid 2> /dev/null || break; sleep 0.1; done
	if kill -0 $pid 2> /dev/null; then rc=hung; else wait $pid; rc=$?; fi
	[ "$rc" = 0 ] && [ ! -d /sys/module/kthread_rs_unload ]
	case $mode in
	8) result $? forgotten_worker_cycles_ended_by_rmmod "rc=$rc" ;;
	9) result $? joins_of_threads_stopped_before_they_ran_end "rc=$rc $(since_mark joins | grep -o 'joined [0-9]* threads')" ;;
	esac
done
