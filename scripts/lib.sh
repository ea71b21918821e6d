# SPDX-License-Identifier: GPL-2.0
# Shared settings for kthread-rs scripts. Source it; do not run it.

KRS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KRS_CACHE=${KRS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kthread-rs}
KRS_TOOLS=$KRS_CACHE/tools
KRS_VENV=$KRS_CACHE/venv
KRS_LLVM=${KRS_LLVM:--22}
KRS_START=${KRS_START:-$(date +%s)}
export KRS_START

# KVER picks the kernel series: Debian's linux-source-$KVER, its own source and its own cached
# test kernel. 7.2 is the default; KRS_KVER2 is the second series that `make check` builds
# everything against. Each series has a pinned Debian version, wanted first; the newest
# version of the series found in the suites is the fallback.
KVER=${KVER:-7.2}
if [ "$KVER" = 7.3 ]; then KRS_KVER2=${KRS_KVER2:-7.2}; else KRS_KVER2=${KRS_KVER2:-7.3}; fi
krs_kver_pin() {
	case "$1" in
	7.2) echo 7.2.13-1 ;;
	7.3) echo 7.3.4-1~bpo13+1 ;;
	esac
}
KRS_KVER_PIN=${KRS_KVER_PIN:-$(krs_kver_pin "$KVER")}
export KVER
KRS_VNG_VERSION=1.42
KRS_BINDGEN_VERSION=0.72.1

# The Debian toolchain, not the rustup proxies in ~/.cargo/bin (wrong version, no rust-src).
KRS_BIN=$KRS_TOOLS/bin
export PATH=$KRS_BIN:$KRS_VENV/bin:/usr/lib/llvm${KRS_LLVM}/bin:$PATH
# bindgen must parse with the same clang that builds the kernel (its -W flags differ by version).
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm${KRS_LLVM}/lib}

krs_phase() {
	local now=$(date +%s)
	printf '[kthread-rs %4ds] %s\n' $((now - KRS_START)) "$*"
}

krs_die() {
	printf '[kthread-rs] error: %s\n' "$*" >&2
	exit 1
}

# Make variables passed to every kernel or module build.
krs_kmake_vars() {
	echo "LLVM=$KRS_LLVM RUSTC=$KRS_BIN/rustc RUSTDOC=$KRS_BIN/rustdoc HOSTRUSTC=$KRS_BIN/rustc BINDGEN=$KRS_BIN/bindgen CLIPPY_DRIVER=$KRS_BIN/clippy-driver"
}

# Copy the module sources under the given paths of the checkout (Kbuild files, Rust and C files,
# headers; no objects, no generated *.mod.c, not the compile-fail cases) to DEST, emptied first:
# building there against another kernel leaves the checkout's objects as they are.
# Usage: krs_copy_sources DEST PATH...
krs_copy_sources() {
	local dest=$1
	shift
	rm -rf "$dest"; mkdir -p "$dest"
	(cd "$KRS_ROOT" && find "$@" -path rust/tests/compile_fail -prune -o -type f \
		\( -name Kbuild -o -name '*.rs' -o -name '*.c' -o -name '*.h' \) ! -name '*.mod.c' -print |
		tar -cf - -T -) | tar -xf - -C "$dest"
}

# The in-tree series' build (scripts/kunit.sh): run CMD in a private mount namespace in which the
# patched source copy SRC is mounted over the pristine source's path KSRC and the build directory
# BUILD over the test kernel's path KTEST, so that objects copied from the test kernel stay valid.
# CMD runs in KSRC. Usage: krs_series_ns SRC KSRC BUILD KTEST CMD [ARGS...]
krs_series_ns() {
	unshare -m --propagation private bash -c '
		set -e
		mount --bind "$1" "$2"
		mount --bind "$3" "$4"
		cd "$2"
		shift 4
		exec "$@"
	' krs-series-ns "$@"
}

# Put the source copy SRC back to the pristine tree KSRC in the files that its applied patches
# touched (listed in SRC/.krs-applied), with the pristine mtimes.
# Usage: krs_series_restore SRC KSRC
krs_series_restore() {
	local f
	while IFS= read -r f; do
		[ -n "$f" ] || continue
		if [ -e "$2/$f" ]; then cp -a "$2/$f" "$1/$f"; else rm -f "$1/$f"; fi
	done < "$1/.krs-applied"
	: > "$1/.krs-applied"
}

# Apply PATCH to the source copy SRC (new mtimes for the files it touches only) and list those
# files in SRC/.krs-applied. Usage: krs_series_apply SRC PATCH
krs_series_apply() {
	git apply --numstat "$2" | cut -f3 >> "$1/.krs-applied"
	(cd "$1" && git apply -p1 "$2")
}
