#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The in-tree form: apply out/series (see scripts/series.sh) to the pristine kernel with `git am`
# and run the kernel's own KUnit runner on it:
#   tools/testing/kunit/kunit.py run --arch x86_64 (LLVM=-22, CONFIG_RUST=y,
#   CONFIG_RUST_KERNEL_DOCTESTS=y, the series' suites and sample) under QEMU TCG.
# Prints kunit.py's output, writes out/kunit.json, and ends with the line
#   kunit.py: N passed, N failed, N skipped
#
# Cost. kunit.py's build directory is cached under $KRS_CACHE/kunit/, keyed by the test kernel's
# key, and stamped with the hash of the series that it was last built with. A cold one is seeded
# with a copy of the cached test kernel's objects (same config, same toolchain, plus the KUnit
# symbols below), so that only what the series and those symbols touch is rebuilt (the Rust
# crates, the sample, the final link) instead of a third kernel. For the copied objects to stay
# valid, the build must see the same absolute paths as the test kernel's build: kunit.py runs in
# a private mount namespace (unshare -m) in which the patched source copy is mounted over the
# pristine source's path and the build directory over the test kernel's. Nothing outside the
# namespace sees those mounts. The copy keeps the pristine mtimes except in the files that the
# series touches. An unchanged series rebuilds nothing.
#
# KUnit's x86_64 QEMU command asks for `-accel kvm` first: KVM hangs on these machines, so a
# wrapper on PATH drops the kvm and hvf accelerators (TCG only), as `vng --disable-kvm` does for
# the test VM.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$KVER" = 7.2 ] || krs_die "the series is for 7.2 (KVER=$KVER)"
KSRC=$(bash "$KRS_ROOT/scripts/fetch-kernel.sh" | tail -n1)
KTEST=$(bash "$KRS_ROOT/scripts/build-kernel.sh" | tail -n1)
SERIES=$KRS_ROOT/out/series
REPO=$(bash "$KRS_ROOT/scripts/series.sh" --repo)
ls "$SERIES"/0001-*.patch > /dev/null 2>&1 || krs_die "no series in $SERIES: run make series"

patches=$(ls "$SERIES"/0*.patch | grep -v /0000-)
hash=$(cat $patches | sha256sum | cut -c1-12)
KU=$KRS_CACHE/kunit/$(basename "$KTEST")
BUILD=$KU/build
WT=$KU/src
mkdir -p "$KU"

# 1. git am onto the pristine tree, in the generation repository (its mtimes do not matter).
krs_phase "kunit: git am of $(echo $patches | wc -w) patches onto $(git -C "$REPO" describe --tags base-"$(cat "$KSRC/.krs-debversion")" 2>/dev/null || echo base)" >&2
base=base-$(cat "$KSRC/.krs-debversion")
git -C "$REPO" checkout -q -f -B am-test "$base"
git -C "$REPO" clean -q -f -d -x
git -C "$REPO" -c user.name=kthread-rs -c user.email=kthread-rs@localhost am -q $patches ||
	{ git -C "$REPO" am --abort || true; krs_die "git am failed"; }
[ "$(git -C "$REPO" rev-parse am-test^{tree})" = "$(git -C "$REPO" rev-parse kthread-rs-series^{tree})" ] ||
	krs_die "git am gave another tree than the generated series"

# 2. The build source: a copy of the pristine tree (`cp -a` keeps the mtimes, which the copied
# objects below are newer than), with the series applied by `git apply`, which gives new mtimes
# to the files that it touches only. Before a new series, the files of the old one come back
# from the pristine tree.
if [ ! -f "$WT/.krs-copied" ]; then
	krs_phase "kunit: copying the pristine source to $WT (once)" >&2
	rm -rf "$WT"
	git -C "$REPO" worktree prune
	cp -a "$KSRC" "$WT"
	: > "$WT/.krs-applied"
	touch "$WT/.krs-copied"
fi
if [ "$(cat "$WT/.krs-series" 2>/dev/null)" != "$hash" ]; then
	krs_series_restore "$WT" "$KSRC"
	rm -f "$WT/.krs-series"
	for p in $patches; do
		krs_series_apply "$WT" "$p" || krs_die "applying $p to $WT failed"
	done
	echo "$hash" > "$WT/.krs-series"
fi

# 3. The build directory: a copy of the test kernel's, once.
if [ ! -f "$BUILD/.krs-seeded" ]; then
	krs_phase "kunit: seeding the build directory from the test kernel ($KTEST, $(du -sh "$KTEST" | cut -f1))" >&2
	rm -rf "$BUILD"
	cp -a "$KTEST" "$BUILD"
	rm -f "$BUILD/.krs-built" "$BUILD/.krs-prepared"
	touch "$BUILD/.krs-seeded"
fi

# kunit.py's configuration: the test kernel's (so the seeded objects stay valid) plus the doctests
# and the series' suites and sample, built in.
kcfg=$KU/kunitconfig
{
	grep -E '^(CONFIG_[A-Z0-9_]+=|# CONFIG_[A-Z0-9_]+ is not set$)' "$KTEST/.config" |
		grep -vE '^(# )?CONFIG_(SAMPLES|SAMPLES_RUST|RUST_KERNEL_DOCTESTS)[= ]'
	cat <<-EOF
	CONFIG_RUST_KERNEL_DOCTESTS=y
	CONFIG_SAMPLES=y
	CONFIG_SAMPLES_RUST=y
	CONFIG_SAMPLE_RUST_KTHREAD=y
	EOF
} > "$kcfg.new"
cmp -s "$kcfg.new" "$kcfg" 2>/dev/null && rm "$kcfg.new" || mv "$kcfg.new" "$kcfg"

# TCG only.
mkdir -p "$KU/bin"
cat > "$KU/bin/qemu-system-x86_64" <<-'EOF'
	#!/bin/bash
	# kunit.py's QEMU, without the kvm and hvf accelerators (scripts/kunit.sh).
	args=()
	while [ $# -gt 0 ]; do
		if [ "$1" = -accel ] && { [ "$2" = kvm ] || [ "$2" = hvf ]; }; then shift 2; continue; fi
		args+=("$1"); shift
	done
	exec /usr/bin/qemu-system-x86_64 "${args[@]}"
EOF
chmod +x "$KU/bin/qemu-system-x86_64"

# 4. kunit.py run, in a private mount namespace with the test kernel's paths.
mkdir -p "$KRS_ROOT/out"
json=$KRS_ROOT/out/kunit.json
log=$KRS_ROOT/out/kunit.log
rm -f "$json" "$KRS_ROOT/out/kunit-console.log" "$BUILD/test.log"
stamp=$(cat "$BUILD/.krs-series" 2>/dev/null || true)
if [ "$stamp" = "$hash" ]; then
	krs_phase "kunit: build directory $BUILD is at series $hash already" >&2
else
	krs_phase "kunit: building series $hash in $BUILD (was: ${stamp:-none, the test kernel objects}; log: $log)" >&2
fi
t0=$(date +%s)
set +e
PATH=$KU/bin:$PATH krs_series_ns "$WT" "$KSRC" "$BUILD" "$KTEST" \
	python3 tools/testing/kunit/kunit.py run --arch x86_64 --build_dir "$KTEST" --kunitconfig "$kcfg" \
	$(for v in $(krs_kmake_vars); do echo --make_options "$v"; done) --jobs "$(nproc)" --timeout 1800 --json="$json" \
	> "$log" 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
	sleep 30
	kill -0 $pid 2>/dev/null || break
	krs_phase "kunit: $(( $(date +%s) - t0 ))s: $(tail -n1 "$log" | cut -c1-90)" >&2
done
wait $pid
rc=$?
set -e
cat "$log"
# kunit.py keeps the whole console of its boot (dmesg included) in the build directory.
cp "$BUILD/test.log" "$KRS_ROOT/out/kunit-console.log" 2>/dev/null || true
[ -s "$json" ] && [ $rc -eq 0 ] && echo "$hash" > "$BUILD/.krs-series"
krs_phase "kunit: kunit.py exited $rc after $(( $(date +%s) - t0 ))s" >&2
python3 - "$json" <<-'EOF'
	import json, sys
	try:
	    data = json.load(open(sys.argv[1]))
	except Exception:
	    print("kunit.py: 0 passed, 1 failed, 0 skipped (no results: kunit.py did not build or boot)")
	    sys.exit(0)
	counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
	def walk(node):
	    cases = node.get("test_cases", [])
	    for c in cases:
	        s = c.get("status", "FAIL")
	        counts[s if s in counts else "FAIL"] += 1
	    for sub in node.get("sub_groups", []):
	        walk(sub)
	walk(data)
	print(f"kunit.py: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
EOF
exit $rc
