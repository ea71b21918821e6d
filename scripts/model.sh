#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make model`: loom model checks of the hand-off protocols, on the host (tools/model/).
#
#   scripts/model.sh [OUT]   results in OUT (default out/model): model.results, one line per
#                            model test and per mutant, "pass NAME" or "STATUS NAME"
#
# 1. The models: `cargo test` of tools/model, which builds the protocol files of
#    rust/kthread_rs/ unchanged over loom. Each test passes.
# 2. The mutants: each tools/model/mutants/NAME.patch reintroduces a bug that this project
#    shipped or nearly shipped. It is applied to a copy of the sources, and the model test named
#    on its `# test:` line must FAIL on the copy; the failing interleaving goes to
#    OUT/mutant-NAME.log. A mutant that no test catches, or that no longer applies, fails.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=${1:-$KRS_ROOT/out/model}
mkdir -p "$out"
: > "$out/model.results"
CARGO=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
[ -x "$CARGO" ] || krs_die "cargo not found (scripts/install-deps.sh installs bindgen with it too)"
# Outside the clone, reused across runs: loom and its dependencies build once. One directory
# per checkout: cargo knows the protocol files (outside the crate) by absolute path and mtime,
# so a target directory shared by two checkouts could run one's build for the other.
mdir=$KRS_CACHE/model/$(printf %s "$KRS_ROOT" | md5sum | cut -c1-12)
export CARGO_TARGET_DIR=$mdir/target
# The default toolchain's rustc, not the kernel's (lib.sh puts that first on PATH).
unset RUSTC
PATH=$(dirname "$CARGO"):$PATH
export CARGO_TERM_COLOR=never

krs_phase "model: building tools/model (loom)"
"$CARGO" test --release --manifest-path "$KRS_ROOT/tools/model/Cargo.toml" --no-run \
	> "$out/build.log" 2>&1 || { cat "$out/build.log"; echo "build-failed model_build" >> "$out/model.results"; exit 1; }

krs_phase "model: the models (log: $out/models.log)"
"$CARGO" test --release --manifest-path "$KRS_ROOT/tools/model/Cargo.toml" \
	-- --test-threads="$(nproc)" > "$out/models.log" 2>&1 || true
grep -E '^test .* \.\.\. ' "$out/models.log" | sed -E 's/^test (.*) \.\.\. (ok|FAILED|ignored).*/\2 \1/' |
	sed -E 's/^ok /pass /; s/^FAILED /failed(see-out\/model\/models.log) /' |
	awk '{ n = $2; gsub(/::/, ".", n); print $1, "model_" n }' >> "$out/model.results"
grep -q '^test result: ok' "$out/models.log" || grep -q 'test result' "$out/models.log" ||
	echo "no-results(see-out/model/models.log) model_run" >> "$out/model.results"

# The mutants' target directory starts as a copy of the models' (loom and its dependencies
# built once, not twice, on a first run), without the crates of the checkout itself, which
# cargo would otherwise find fresh by the checkout's paths and never rebuild from the copy.
if [ ! -d "$mdir/mutant-target" ]; then
	cp -a "$CARGO_TARGET_DIR" "$mdir/mutant-target"
	CARGO_TARGET_DIR=$mdir/mutant-target "$CARGO" clean -q --release \
		--manifest-path "$KRS_ROOT/tools/model/Cargo.toml" -p kthread-rs-model -p kernel
fi
for patch in "$KRS_ROOT"/tools/model/mutants/*.patch; do
	[ -e "$patch" ] || continue
	name=$(basename "$patch" .patch)
	test=$(sed -n 's/^# test: *//p' "$patch" | head -n1)
	krs_phase "model: mutant $name (must fail $test)"
	# One place and one target directory for every mutant, copied afresh (new mtimes): cargo
	# knows the files outside the crate's own directory by their absolute paths and mtimes.
	tmp=$mdir/mutant-src
	rm -rf "$tmp"; mkdir -p "$tmp/rust" "$tmp/tools"
	cp -r "$KRS_ROOT/rust/kthread_rs" "$tmp/rust/"
	cp -r "$KRS_ROOT/tools/model" "$tmp/tools/"
	log=$out/mutant-$name.log
	if ! patch -s -p1 -d "$tmp" < "$patch" > "$log" 2>&1; then
		echo "does-not-apply(see-out/model/mutant-$name.log) mutant_$name" >> "$out/model.results"
	elif CARGO_TARGET_DIR=$mdir/mutant-target "$CARGO" test --release --manifest-path "$tmp/tools/model/Cargo.toml" \
		"$test" -- --exact > "$log" 2>&1; then
		echo "not-caught(see-out/model/mutant-$name.log) mutant_$name" >> "$out/model.results"
	elif grep -q "^test $test \.\.\. FAILED" "$log" || { ! grep -q '^error' "$log" && grep -q 'panicked at' "$log"; }; then
		# Caught: the test failed (or loom aborted the process while unwinding the failure).
		echo "pass mutant_$name"  >> "$out/model.results"
	else
		echo "did-not-build(see-out/model/mutant-$name.log) mutant_$name" >> "$out/model.results"
	fi
done
pass=$(grep -c '^pass ' "$out/model.results" || true)
fail=$(grep -vc '^pass ' "$out/model.results" || true)
krs_phase "model: $pass passed, $fail failed (results: $out/model.results)"
[ "$fail" = 0 ]
