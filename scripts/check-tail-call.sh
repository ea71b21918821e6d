#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# H17's last window: a task_work callback drops the module reference with module_put(), and
# if any of the module's instructions ran after that, an rmmod in between would leave the
# task returning into freed module text. kthread_rs::task_work::task_work_func ends in a tail call, so
# module_put() returns straight to the C code. Check that in every built module that has the
# trampoline: module_put must be reached by a jmp, never by a call.
# Prints "pass tail_call_<module>" or "<why> tail_call_<module>" per module.
# Usage: check-tail-call.sh MODULE.ko...
set -uo pipefail
. "$(dirname "$0")/lib.sh"
for ko in "$@"; do
	name=tail_call_$(basename "$ko" .ko)
	dis=$(llvm-objdump$KRS_LLVM -dr --no-show-raw-insn "$ko" |
		awk '/^[0-9a-f]+ <.*9task_work14task_work_func.*>:$/ { p = 1; n++; next } /^$/ { p = 0 } p' )
	[ -n "$dis" ] || continue	# no task_work in this module
	# The instruction before each module_put relocation is the call or jump that uses it.
	how=$(echo "$dis" | grep -B1 'R_X86_64_PLT32[[:space:]]*module_put' | grep -v R_X86 | awk '{print $2}' | sort -u)
	case "$how" in
	jmp) echo "pass $name" ;;
	"") echo "no-module_put-found $name" ;;
	*) echo "module_put-not-a-tail-call($(echo $how | tr ' ' ,)) $name" ;;
	esac
done
