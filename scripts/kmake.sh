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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
make -C "$KDIR" M="$KRS_ROOT" "${vars[@]}" -j"$(nproc)" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || exit "$rc"
if grep -qE '^(warning|.*: warning:)' "$log"; then
	krs_die "the build printed warnings (they count as errors here)"
fi
