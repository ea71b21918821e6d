#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make setup`: install the toolchain and build (or reuse) the cached test kernel.
# Prints the test kernel tree (KDIR) on its last line.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bash "$KRS_ROOT/scripts/install-deps.sh" >&2
bash "$KRS_ROOT/scripts/build-kernel.sh"
