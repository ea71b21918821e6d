#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make series`: write out/series/ (a cover letter and one patch per concept, `git format-patch`
# form) that adds kthread-rs to the pristine kernel as `kernel::kthread` and a sample, generated
# from this checkout by scripts/series.py; then run the kernel's checkpatch.pl --strict on every
# patch (out/series/checkpatch.txt).
# --repo: only print (and create once) the git repository of the pristine tree.
#
# The pristine tree is Debian's linux-source (scripts/fetch-kernel.sh), committed once into a git
# repository under $KRS_CACHE/series/ (tag base-<Debian version>), outside the clone.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$KVER" = 7.2 ] || krs_die "the series is for 7.2 (KVER=$KVER)"
KSRC=$(bash "$KRS_ROOT/scripts/fetch-kernel.sh" | tail -n1)
ver=$(cat "$KSRC/.krs-debversion")
REPO=$KRS_CACHE/series/linux-$ver
if [ ! -d "$REPO/.git" ]; then
	krs_phase "series: committing the pristine $ver tree to $REPO (once)" >&2
	rm -rf "$REPO.tmp"
	mkdir -p "$(dirname "$REPO")"
	cp -a "$KSRC" "$REPO.tmp"
	d="2026-01-01T00:00:00Z"
	# Debian's top-level .gitignore ignores everything (`/*`): add with -f.
	(cd "$REPO.tmp" && git init -q -b base . && git add -f -A . &&
		GIT_COMMITTER_DATE=$d git -c user.name=kthread-rs -c user.email=kthread-rs@localhost \
			commit -q --date=$d -m "Linux $ver (Debian linux-source-$KVER)" &&
		git tag "base-$ver")
	mv "$REPO.tmp" "$REPO"
fi
if [ "${1:-}" = --repo ]; then
	echo "$REPO"
	exit 0
fi

out=$KRS_ROOT/out/series
krs_phase "series: generating $out from rust/kthread_rs/ and $(basename "$KRS_ROOT")/samples/rust/rust_kthread.rs" >&2
python3 "$KRS_ROOT/scripts/series.py" "$KRS_ROOT" "$REPO" "base-$ver" "$out"
n=$(ls "$out"/0*.patch | grep -vc 0000-)
krs_phase "series: $n patches and a cover letter" >&2
(cd "$out" && for p in 0*.patch; do
	printf '%-70s %s\n' "$p" "$(grep -E '^ [0-9]+ files? changed' "$p" | sed 's/^ //')"
done) >&2

# checkpatch --strict on every patch. Errors fail; so does any warning or check, unless its type
# is one that the cover letter explains (scripts/series/checkpatch-explained: type, reason).
cp_out=$out/checkpatch.txt
: > "$cp_out"
: > "$out/checkpatch.results"
explained=$(grep -v '^#' "$KRS_ROOT/scripts/series/checkpatch-explained" | cut -d' ' -f1 | paste -sd'|')
errs=0 warns=0 checks=0
for p in $(ls "$out"/0*.patch | grep -v /0000-); do
	r=$(cd "$REPO" && perl scripts/checkpatch.pl --strict --no-color --show-types --showfile "$p" 2>&1 || true)
	printf '=== %s\n%s\n\n' "$(basename "$p")" "$r" >> "$cp_out"
	line=$(printf '%s\n' "$r" | grep -E '^total: ' | tail -n1)
	e=$(sed -n 's/^total: \([0-9]*\) errors.*/\1/p' <<< "$line")
	w=$(sed -n 's/.* \([0-9]*\) warnings.*/\1/p' <<< "$line")
	c=$(sed -n 's/.* \([0-9]*\) checks.*/\1/p' <<< "$line")
	errs=$((errs + ${e:-1})); warns=$((warns + ${w:-0})); checks=$((checks + ${c:-0}))
	bad=$(printf '%s\n' "$r" | grep -oE '^[^ ]*: (ERROR|WARNING|CHECK):[A-Z_0-9]+' | sed 's/.*: //' |
		grep -vE "^(WARNING|CHECK):(${explained:-NONE})$" | sort | uniq -c | awk '{print $2"x"$1}' | paste -sd, || true)
	if [ -n "$line" ] && [ -z "$bad" ]; then
		echo "pass $(basename "$p" .patch)" >> "$out/checkpatch.results"
	else
		echo "checkpatch(${bad:-no-total})(see-out/series/checkpatch.txt) $(basename "$p" .patch)" >> "$out/checkpatch.results"
	fi
	printf '  checkpatch %-66s %s\n' "$(basename "$p")" "${line:-no total line}" >&2
done
krs_phase "series: checkpatch --strict: $errs errors, $warns warnings, $checks checks ($cp_out)" >&2
echo "$out"
