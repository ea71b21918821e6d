#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Configure and build the kthread-rs test kernel, once per (kernel version, config, toolchain).
# --print-dir: only print where the tree for the current key lives.
# --bench: the benchmark kernel instead (scripts/kernel/kthread-rs-bench.config: no debugging),
#   cached beside the test kernel under its own key. `make check` never builds it.
# --prepare: stop after `modules_prepare` (config, headers, objtool and the Rust crates): enough to
#   build the modules against it, not to boot it. A fully built tree serves too; a later full
#   build continues in the same directory.
#
# The built tree lives under $KRS_CACHE/kernel/<key>, outside the clone, so every later run
# (and CI on the same machine) reuses it at once. Prints the tree's path on its last line.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

KSRC=$(bash "$KRS_ROOT/scripts/fetch-kernel.sh" | tail -n1)
FRAG=$KRS_ROOT/scripts/kernel/kthread-rs.config
flavor=
if [ "${1:-}" = --bench ]; then
	shift
	flavor=bench-
	mkdir -p "$KRS_CACHE/kernel"
	bfrag=$KRS_CACHE/kernel/bench.config
	{ sed -e '/^# Debugging that must catch our bugs\.$/,/^$/d' -e '/^CONFIG_PREEMPT=y$/d' "$FRAG"
	  cat "$KRS_ROOT/scripts/kernel/kthread-rs-bench.config"; } > "$bfrag"
	FRAG=$bfrag
fi
key=$( {
	cat "$KSRC/.krs-debversion" "$FRAG"
	sed -n '/^# --- config steps ---$/,/^# --- end ---$/p' "$0"
	"$KRS_BIN/rustc" --version; "$KRS_BIN/bindgen" --version; "clang$KRS_LLVM" --version | head -n1
	echo "$LIBCLANG_PATH"
} | sha256sum | cut -c1-12)
O=$KRS_CACHE/kernel/$flavor$(cat "$KSRC/.krs-debversion")-$key
[ "${1:-}" = --print-dir ] && { echo "$O"; exit 0; }
if [ -f "$O/.krs-built" ]; then
	krs_phase "kernel: cached tree $O" >&2
	echo "$O"
	exit 0
fi
if [ "${1:-}" = --prepare ] && [ -f "$O/.krs-prepared" ]; then
	krs_phase "kernel: cached prepared tree $O" >&2
	echo "$O"
	exit 0
fi

KMAKE=(make -C "$KSRC" O="$O" $(krs_kmake_vars))
mkdir -p "$O"
log=$O/build.log
: > "$log"

krs_phase "kernel: checking the toolchain (make rustavailable)" >&2
"${KMAKE[@]}" rustavailable >> "$log" 2>&1 || { tail -n 20 "$log" >&2; krs_die "rustavailable failed"; }

krs_phase "kernel: configuring (allnoconfig + virtme-ng + ${flavor:+bench: }$FRAG)" >&2
# --- config steps ---
rm -f "$O/.config"
(cd "$KSRC" && virtme-configkernel --allnoconfig --custom "$FRAG" O="$O" $(krs_kmake_vars)) \
	< /dev/null >> "$log" 2>&1 || { tail -n 20 "$log" >&2; krs_die "virtme-configkernel failed"; }
"$KSRC/scripts/config" --file "$O/.config" \
	-d DEBUG_INFO -d DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT -d DEBUG_INFO_DWARF4 -d DEBUG_INFO_DWARF5 \
	-e DEBUG_INFO_NONE -d DEBUG_INFO_BTF -d WERROR -d MODVERSIONS -d MODULE_SIG \
	-d SCSI -d VGA_CONSOLE -d WATCHDOG
"${KMAKE[@]}" olddefconfig >> "$log" 2>&1
# --- end ---

# Every "=y" (and numeric) line of the fragment must have survived: RUST drops out silently.
bad=
while IFS= read -r line; do
	case "$line" in CONFIG_*=*) grep -qxF "$line" "$O/.config" || bad="$bad $line";; esac
done < "$FRAG"
while IFS= read -r line; do
	case "$line" in "# CONFIG_"*" is not set")
		sym=${line#\# }; sym=${sym%% *}
		grep -q "^$sym=y" "$O/.config" && bad="$bad $sym=n";;
	esac
done < "$FRAG"
[ -z "$bad" ] || krs_die "kernel config lost:$bad (see $O/.config)"
krs_phase "kernel: config ok, $(grep -c '=y$' "$O/.config") symbols =y" >&2

if [ "${1:-}" = --prepare ]; then
	krs_phase "kernel: modules_prepare only (headers, objtool, the Rust crates; log: $log)" >&2
	t0=$(date +%s)
	"${KMAKE[@]}" -j"$(nproc)" modules_prepare >> "$log" 2>&1 || { tail -n 40 "$log" >&2; krs_die "modules_prepare failed (log: $log)"; }
	krs_phase "kernel: prepared in $(( $(date +%s) - t0 ))s" >&2
	touch "$O/.krs-prepared"
	echo "$O"
	exit 0
fi

krs_phase "kernel: building with clang$KRS_LLVM, -j$(nproc) (log: $log)" >&2
t0=$(date +%s)
"${KMAKE[@]}" -j"$(nproc)" bzImage modules >> "$log" 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
	sleep 30
	n=$(grep -cE '^  (CC|RUSTC|AS|LD|AR)' "$log" || true)
	krs_phase "kernel: $n objects built, $(( $(date +%s) - t0 ))s: $(tail -n1 "$log" | cut -c1-80)" >&2
done
wait $pid || { tail -n 40 "$log" >&2; krs_die "kernel build failed (log: $log)"; }
# Out-of-tree Rust modules need the tree's Rust metadata, which `prepare` makes for O= trees too.
"${KMAKE[@]}" -j"$(nproc)" modules_prepare >> "$log" 2>&1
krs_phase "kernel: built in $(( $(date +%s) - t0 ))s, $(du -sh "$O" | cut -f1) on disk" >&2
touch "$O/.krs-built"
echo "$O"
