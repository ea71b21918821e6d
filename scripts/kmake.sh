#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the out-of-tree modules: scripts/kmake.sh [make args...]
# KDIR defaults to the cached test kernel (built by scripts/setup.sh when missing). Any kernel
# warning in the output fails the build: the modules must build with zero warnings.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KDIR=${KDIR:-$(bash "$KRS_ROOT/scripts/setup.sh" | tail -n1)}
[ -f "$KDIR/Makefile" ] || krs_die "KDIR=$KDIR is not a prepared kernel tree"
vars=(RUSTC="$KRS_BIN/rustc" RUSTDOC="$KRS_BIN/rustdoc" HOSTRUSTC="$KRS_BIN/rustc" CLIPPY_DRIVER="$KRS_BIN/clippy-driver")
# A tree built with clang needs the same LLVM for its modules (KASAN and RUST demand it).
grep -q '^CONFIG_CC_IS_CLANG=y' "$KDIR/.config" 2>/dev/null && vars+=(LLVM="$KRS_LLVM")
# A prepared tree (build-kernel.sh --prepare) has no vmlinux symbol list: modpost cannot
# check undefined symbols there, and says so instead of failing.
[ -f "$KDIR/Module.symvers" ] || vars+=(KBUILD_MODPOST_WARN=1)
# KRS_M=dir builds a copy of the sources there (check-kver2.sh: another kernel, same sources;
# Kbuild's MO= refuses a source tree with objects in it). In place, a tree built against
# another kernel is cleaned first, so a KVER switch leaves no stale objects.
M=${KRS_M:-$KRS_ROOT}
if [ "$M" = "$KRS_ROOT" ]; then
	stamp=$KRS_ROOT/out/.kmake-kdir
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$KDIR" ] && [ "${1:-}" != clean ]; then
		make -C "$KDIR" M="$KRS_ROOT" "${vars[@]}" clean > /dev/null
	fi
	mkdir -p "$KRS_ROOT/out"; echo "$KDIR" > "$stamp"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
make -C "$KDIR" M="$M" "${vars[@]}" -j"$(nproc)" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || exit "$rc"
if grep -qE '^(warning|.*: warning:)' "$log"; then
	krs_die "the build printed warnings (they count as errors here)"
fi
