#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make rustdoc`: HTML documentation of rust/kthread_rs/ in out/rustdoc/ (open
# out/rustdoc/kthread_rs/kthread_rs/index.html). The abstractions are not a crate of their own,
# so this documents a minimal module crate that includes them, with the exact flags that
# kbuild gives the module crates (taken from a built module's .cmd file), minus its outputs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KDIR=${KDIR:-$(bash "$KRS_ROOT/scripts/setup.sh" | tail -n1)}
export KDIR
bash "$KRS_ROOT/scripts/kmake.sh" modules > /dev/null
cmdfile=$KRS_ROOT/rust/tests/.kthread_rs_smoke_test.o.cmd
out=$KRS_ROOT/out/rustdoc
rm -rf "$out"; mkdir -p "$out/src"
cat > "$out/src/kthread_rs.rs" <<EOR
// SPDX-License-Identifier: GPL-2.0
//! kthread-rs: safe Rust APIs over the kernel's kthread, kthread_worker and task_work C code.
//!
//! The abstractions are in [\`kthread_rs\`]; this crate is the minimal module that includes
//! them, so that rustdoc can document them (see \`scripts/rustdoc.sh\`).
use kernel::prelude::*;
#[path = "$KRS_ROOT/rust/kthread_rs/mod.rs"]
pub mod kthread_rs;
module! {
    type: Doc,
    name: "kthread_rs",
    authors: ["kthread-rs developers"],
    description: "kthread-rs documentation crate",
    license: "GPL",
}
struct Doc;
impl kernel::Module for Doc {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Doc)
    }
}
EOR
# The rustc command of the smoke test module, as kbuild ran it.
cmd=$(sed -n '1s/^savedcmd_[^=]*:= //p' "$cmdfile" | sed 's/ ; .*//')
flags=()
skip=
for tok in $cmd; do
	if [ -n "$skip" ]; then skip=; continue; fi
	case "$tok" in
	OBJTREE=*|RUST_MODFILE=*|*/clippy-driver|*/rustc) ;;
	--out-dir|--crate-type) skip=1 ;;
	--emit=*|-Zbinary_dep_depinfo=*|-Wclippy::*|-Aclippy::*|*.rs) ;;
	*) flags+=("${tok//\'/}") ;;	# the .cmd file keeps the shell's quotes
	esac
done
cd "$KDIR"
RUSTC_BOOTSTRAP=1 RUST_MODFILE=kthread_rs OBJTREE=$KDIR "$KRS_BIN/rustdoc" "${flags[@]}" \
	--crate-name kthread_rs -o "$out" "$out/src/kthread_rs.rs" 2>&1 | tee "$out/rustdoc.log"
[ -f "$out/kthread_rs/kthread_rs/index.html" ] || krs_die "rustdoc produced no index (see $out/rustdoc.log)"
krs_phase "rustdoc: $out/kthread_rs/kthread_rs/index.html"
