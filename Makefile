# SPDX-License-Identifier: GPL-2.0
#
# kthread-rs: safe Rust kthread, kthread_worker and task_work APIs for Linux 7.2 and 7.3.
#
#   make setup     install the toolchain and build the cached test kernel
#   make           build the modules (against KDIR, default: the cached test kernel)
#   make check     the tests: KUnit in a virtme-ng VM + compile-fail cases; ends "N passed, N failed"
#   make run       boot the test kernel, run the stress sample for 60 s, print its report
#   make soak      the same for DURATION seconds (default 600)
#   make bench     C and Rust benchmarks alternating in one boot: medians and Rust/C ratios
#   make series    out/series/: the in-tree form as a git-am patch series onto Linux 7.2, and
#                  checkpatch --strict on it (make check also runs kunit.py on it)
#   make kunit     apply out/series with git am and run the kernel's kunit.py on it (QEMU TCG)
#   make series-bisect  build vmlinux at each patch of the applied series (after make kunit)
#   make model     loom model checks of the hand-off protocols on the host (tools/model), and
#                  the mutants that each must catch (make check runs them too)
#   make rustdoc   HTML docs of rust/kthread_rs/ in out/rustdoc/
#   make rust-analyzer  rust-project.json for editors
#   make clippy    build with CLIPPY=1
#   make fmt       rustfmt the Rust sources (fmt-check: only check)
#
# KVER=7.3 picks Debian's linux-source-7.3 and its own cached test kernel, everywhere (default 7.2;
# `make check` also builds every module and compile-fail case against the other one).
# KDIR=/path/to/a/prepared/rust/kernel builds against another tree. KVM=1 opts into KVM.

SHELL := /bin/bash
export KDIR KVER KVM DURATION STRESS_PARAMS BENCH_ROUNDS

.PHONY: all modules setup check run soak bench series kunit series-bisect model rustdoc rust-analyzer clippy fmt fmt-check clean

all: modules

modules:
	@bash scripts/kmake.sh modules

setup:
	@bash scripts/setup.sh

check:
	@bash scripts/check.sh

run:
	@bash scripts/run.sh

soak:
	@DURATION=$${DURATION:-600} bash scripts/run.sh

bench:
	@bash scripts/bench.sh

series:
	@bash scripts/series.sh

kunit:
	@bash scripts/kunit.sh

series-bisect:
	@bash scripts/series-bisect.sh

model:
	@bash scripts/model.sh

rustdoc:
	@bash scripts/rustdoc.sh

rust-analyzer:
	@bash scripts/rust-analyzer.sh

clippy:
	@bash scripts/kmake.sh CLIPPY=1 modules

fmt:
	@bash scripts/fmt.sh

fmt-check:
	@bash scripts/fmt.sh --check

clean:
	@bash scripts/kmake.sh clean
	rm -rf out
