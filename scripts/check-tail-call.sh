#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The last windows of H17 and H21: a function of the module, called by C, gives up what keeps
# the module from being freed, and if any of the module's instructions ran after that, an
# unload in between would leave the CPU returning into freed module text. Each such function
# ends in a tail call, so that the C callee returns straight to the C caller:
#   task_work::task_work_func   -> module_put()   (a task_work callback's module reference)
#   registry::reaper::register   -> kobject_put() (the reference that free_module() waits for)
#   registry::reaper::unregister -> kobject_put() (the same)
# Check it in every built module that has them: the callee must be reached by a jmp, never by
# a call. Prints "pass tail_call_<what>_<module>" or "<why> tail_call_<what>_<module>".
# Usage: check-tail-call.sh MODULE.ko...
set -uo pipefail
. "$(dirname "$0")/lib.sh"

# <what> <mangled-name fragment> <callee>
CHECKS="task_work 9task_work14task_work_func module_put
reaper_register 6reaper8register kobject_put
reaper_unregister 6reaper10unregister kobject_put"

for ko in "$@"; do
	all=$(llvm-objdump$KRS_LLVM -dr --no-show-raw-insn "$ko")
	while read -r what frag callee; do
		name=tail_call_${what}_$(basename "$ko" .ko)
		dis=$(echo "$all" | awk -v f="$frag" '/^[0-9a-f]+ <.*>:$/ { p = index($0, f) > 0; if (p) n++; next } /^$/ { p = 0 } p')
		[ -n "$dis" ] || continue	# not in this module
		# The instruction before each relocation of the callee is the call or jump using it.
		how=$(echo "$dis" | grep -B1 "R_X86_64_PLT32[[:space:]]*$callee" | grep -v R_X86 | awk '{print $2}' | sort -u)
		case "$how" in
		jmp) echo "pass $name" ;;
		"") echo "no-$callee-found $name" ;;
		*) echo "$callee-not-a-tail-call($(echo $how | tr ' ' ,)) $name" ;;
		esac
	done <<< "$CHECKS"
done
