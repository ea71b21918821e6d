#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The second kernel of `make check`: build the modules (zero warnings), every compile-fail case
# and every doc example against Linux $KRS_KVER2 as well, from the same sources.
# Usage: check-kver2.sh OUTDIR DOC-EXAMPLES-DIR; writes OUTDIR/kver2-$KRS_KVER2.results.
#
# Building needs only a prepared tree (config, headers, objtool and the Rust crates: a few
# minutes cold), not a whole kernel; a fully built tree of the same key serves as well, and
# `make check KVER=$KRS_KVER2` builds and boots one. Without vmlinux's symbol list modpost
# cannot check the modules' undefined symbols; the default kernel's build does.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
out=$1 docs=$2
K2=$KRS_KVER2
[ "$K2" != "$KVER" ] || exit 0
res=$out/kver2-$K2.results
: > "$res"
KDIR2=$(KVER=$K2 KRS_KVER_PIN=$(krs_kver_pin "$K2") bash "$KRS_ROOT/scripts/build-kernel.sh" --prepare \
	2> >(sed 's/^/  /' >&2) | tail -n1)
if [ ! -f "$KDIR2/.krs-prepared" ] && [ ! -f "$KDIR2/.krs-built" ]; then
	echo "not-prepared(see-stderr) linux-${K2}_kernel_tree" >> "$res"
	exit 0
fi
krs_phase "check: Linux $K2 ($(basename "$KDIR2")): modules" >&2
# A copy of the module sources (the Rust files, Kbuild files and C helpers; no objects), so
# that the default kernel's objects in the checkout stay as they are.
copy=$KRS_ROOT/out/kver2/src
krs_copy_sources "$copy" Kbuild rust samples
if KDIR=$KDIR2 KRS_M=$copy bash "$KRS_ROOT/scripts/kmake.sh" modules \
	> "$out/kver2-build.log" 2>&1; then
	echo "pass linux-${K2}_modules" >> "$res"
else
	echo "failed(see-out/check/kver2-build.log) linux-${K2}_modules" >> "$res"
fi
krs_phase "check: Linux $K2: compile-fail cases and doc examples" >&2
KDIR=$KDIR2 CF_WORK=$KRS_ROOT/out/kver2/compile-fail bash "$KRS_ROOT/scripts/compile-fail.sh" \
	"$KRS_ROOT/rust/tests/compile_fail" "$docs" 2> "$out/kver2-compile-fail.log" |
	sed "s/ \([^ ]*\)$/ linux-${K2}_\1/" >> "$res"
