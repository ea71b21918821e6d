#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make rust-analyzer`: write rust-project.json at the top of the tree, so that an editor's
# rust-analyzer understands the modules (the kernel's own generator, for external modules).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KDIR=${KDIR:-$(bash "$KRS_ROOT/scripts/setup.sh" | tail -n1)}
make -C "$KDIR" M="$KRS_ROOT" $(krs_kmake_vars) rust-analyzer > /dev/null
[ -s "$KRS_ROOT/rust-project.json" ] || krs_die "no rust-project.json was written"
krs_phase "rust-analyzer: $KRS_ROOT/rust-project.json ($(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['crates']))" "$KRS_ROOT/rust-project.json") crates)"
