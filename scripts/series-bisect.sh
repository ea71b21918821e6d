#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make series-bisect`: build vmlinux at each patch of out/series in turn (after `make kunit`),
# in kunit.py's cached build directory, and report per patch whether it built and how many
# warnings it gave; the last patch is built with clippy (CLIPPY=1) as well. Ends with
#   series-bisect: N of N patches build, N warnings
# Each step rebuilds the Rust crates and relinks vmlinux: a few minutes per patch. Afterwards
# kunit.py rebuilds the Rust crates once more (clippy-driver changed their command lines).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

KSRC=$(bash "$KRS_ROOT/scripts/fetch-kernel.sh" | tail -n1)
KTEST=$(bash "$KRS_ROOT/scripts/build-kernel.sh" | tail -n1)
KU=$KRS_CACHE/kunit/$(basename "$KTEST")
[ -f "$KU/build/.krs-seeded" ] && [ -f "$KU/src/.krs-copied" ] || krs_die "run make kunit first (no build directory in $KU)"
WT=$KU/src
SERIES=$KRS_ROOT/out/series
patches=$(ls "$SERIES"/0*.patch | grep -v /0000-)
n=$(echo $patches | wc -w)
# Back to the pristine tree (as scripts/kunit.sh does), then one patch more per step.
krs_series_restore "$WT" "$KSRC"
rm -f "$WT/.krs-series" "$KU/build/.krs-series"
ok=0 warns=0 i=0
for p in $patches; do
	i=$((i + 1))
	krs_series_apply "$WT" "$p" || krs_die "applying $p failed"
	clippy=
	[ "$i" = "$n" ] && clippy=CLIPPY=1
	log=$KRS_ROOT/out/series/bisect-$i.log
	t0=$(date +%s)
	if krs_series_ns "$WT" "$KSRC" "$KU/build" "$KTEST" \
		make -C "$KSRC" O="$KTEST" $(krs_kmake_vars) $clippy -j"$(nproc)" vmlinux > "$log" 2>&1; then
		st=built; ok=$((ok + 1))
	else
		st=FAILED
	fi
	w=$(grep -cE '^(warning|error)(\[|:)' "$log" || true)
	warns=$((warns + w))
	krs_phase "series-bisect: $(basename "$p" .patch): $st${clippy:+ (clippy)}, $w warnings, $(( $(date +%s) - t0 ))s (log: $log)" >&2
done
# The tree now holds the whole series again; kunit.py rebuilds what clippy-driver built.
echo "series-bisect: $ok of $n patches build, $warns warnings"
