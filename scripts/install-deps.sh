#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Install what a fresh Debian 12 machine lacks to build and test kthread-rs.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PKGS="rustc-web cargo-web rust-web-src rust-web-clippy rustfmt-web clang-22 lld-22 llvm-22 libclang1-22
      flex bison bc libelf-dev libssl-dev cpio kmod xz-utils make gcc python3-venv
      qemu-system-x86 udev busybox-static"

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

missing=
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	krs_phase "apt: installing$missing"
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# A directory of links that puts Debian's rustc 1.9x first on PATH.
mkdir -p "$KRS_BIN"
for t in rustc rustdoc clippy-driver rustfmt; do
	src=/usr/bin/$t
	[ -x "$src" ] || src=$(ls /usr/bin/$t-* 2>/dev/null | head -n1 || true)
	[ -x "$src" ] || krs_die "$t not found after install"
	ln -sf "$src" "$KRS_BIN/$t"
done

if ! "$KRS_BIN/bindgen" --version 2>/dev/null | grep -q "$KRS_BINDGEN_VERSION"; then
	krs_phase "cargo: installing bindgen-cli $KRS_BINDGEN_VERSION (about 3 min)"
	CARGO=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
	"$CARGO" install -q bindgen-cli --version "$KRS_BINDGEN_VERSION" --locked --root "$KRS_TOOLS"
fi

if ! "$KRS_VENV/bin/vng" --version 2>/dev/null | grep -q "$KRS_VNG_VERSION"; then
	krs_phase "pip: installing virtme-ng $KRS_VNG_VERSION in $KRS_VENV"
	python3 -m venv "$KRS_VENV"
	"$KRS_VENV/bin/pip" install -q "virtme-ng==$KRS_VNG_VERSION"
fi

krs_phase "toolchain: $("$KRS_BIN/rustc" --version), $("$KRS_BIN/bindgen" --version), clang$KRS_LLVM $(clang$KRS_LLVM --version | head -n1 | grep -o '[0-9][0-9.]*' | head -n1), vng $("$KRS_VENV/bin/vng" --version | tail -n1)"
