#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make run`: boot the test kernel, load the sample modules (samples/*.ko; the smoke test until
# a sample exists), let them run, unload them, and print what they wrote to dmesg.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KDIR=${KDIR:-$(bash "$KRS_ROOT/scripts/setup.sh" | tail -n1)}
export KDIR
bash "$KRS_ROOT/scripts/kmake.sh" modules > /dev/null
mods=$( { find "$KRS_ROOT/samples" -name '*.ko' 2>/dev/null || true; } | sort)
[ -n "$mods" ] || mods=$(find "$KRS_ROOT/rust/tests" -name '*.ko' | sort)
out=$KRS_ROOT/out/run
rm -rf "$out"; mkdir -p "$out"
bash "$KRS_ROOT/scripts/vm-run.sh" "$KDIR" "$out" "$KRS_ROOT/scripts/guest-run.sh" "$out" \
	"${RUN_SECONDS:-60}" $mods || true
sed -n '/kthread-rs: insmod/,$p' "$out/dmesg"
python3 "$KRS_ROOT/scripts/summarize.py" "$out" | grep -v '^[0-9]* passed' || true
