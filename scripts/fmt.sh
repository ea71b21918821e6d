#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# rustfmt every Rust file of the project with the kernel tree's .rustfmt.toml.
# Usage: fmt.sh [--check]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KSRC=$(bash "$KRS_ROOT/scripts/fetch-kernel.sh" | tail -n1)
cd "$KRS_ROOT"
# --check prints the diff and fails when a file is not formatted.
# (samples/ may not exist yet: a clean clone has no empty directories.)
dirs=
for d in rust samples tools; do
	if [ -d "$d" ]; then dirs="$dirs $d"; fi
done
find $dirs -name '*.rs' -print0 | xargs -0 "$KRS_BIN/rustfmt" --edition 2021 \
	--config-path "$KSRC/.rustfmt.toml" ${1:-}
