#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the dmesg of a `make bench` boot into the table of medians and Rust/C ratios.

Each round gives one median (and one p99) per operation and implementation; the table shows
the median over the rounds. Writes OUTDIR/bench.txt and OUTDIR/bench.json.
Usage: bench-report.py OUTDIR KERNEL MODE
"""
import json
import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"krs-bench: impl=(\w+) round=(\d+) op=(\w+) n=(\d+) median_ns=(\d+) p99_ns=(\d+)")
SIZE = re.compile(r"krs-bench: impl=(\w+) round=\d+ size=(\w+) bytes=(\d+)")


def main(out, kernel, mode):
    out = Path(out)
    text = (out / "dmesg").read_text(errors="replace")
    runs = {}
    order = []
    for impl, rnd, op, n, med, p99 in LINE.findall(text):
        runs.setdefault((op, impl), []).append((int(med), int(p99)))
        if op not in order:
            order.append(op)
    sizes = {}
    for impl, name, b in SIZE.findall(text):
        sizes.setdefault(name, {})[impl] = int(b)
    cpu = (out / "cpu").read_text().split("\n") if (out / "cpu").exists() else ["?", "?"]
    rows = []
    for op in order:
        c, r = runs.get((op, "c"), []), runs.get((op, "rust"), [])
        if not c or not r:
            continue
        cm = statistics.median(m for m, _ in c)
        rm = statistics.median(m for m, _ in r)
        cp = statistics.median(p for _, p in c)
        rp = statistics.median(p for _, p in r)
        rows.append({"op": op, "rounds": min(len(c), len(r)), "c_median_ns": cm,
                     "rust_median_ns": rm, "ratio": rm / cm if cm else None,
                     "c_p99_ns": cp, "rust_p99_ns": rp})
    head = (f"kthread-rs benchmarks: kernel {kernel}, {mode}, {cpu[1].strip()} vCPUs "
            f"({cpu[0].strip()}); medians over rounds, C and Rust alternating in one boot")
    lines = [head, "",
             f"{'operation':34} {'rounds':>6} {'C median':>12} {'Rust median':>12} {'Rust/C':>7}"
             f" {'C p99':>12} {'Rust p99':>12}"]
    for x in rows:
        lines.append(f"{x['op']:34} {x['rounds']:>6} {x['c_median_ns']:>10.0f}ns {x['rust_median_ns']:>10.0f}ns"
                     f" {x['ratio']:>7.3f} {x['c_p99_ns']:>10.0f}ns {x['rust_p99_ns']:>10.0f}ns")
    lines += ["", f"{'size (bytes)':34} {'C':>6} {'Rust':>6}"]
    for name, v in sizes.items():
        lines.append(f"{name:34} {v.get('c', '-'):>6} {v.get('rust', '-'):>6}")
    if (m := re.findall(r"krs-bench: impl=(\w+) failed: (.*)", text)):
        lines += ["", "FAILED: " + "; ".join(f"{i}: {e}" for i, e in m)]
    report = "\n".join(lines) + "\n"
    (out / "bench.txt").write_text(report)
    (out / "bench.json").write_text(json.dumps({"kernel": kernel, "mode": mode, "cpu": cpu[0].strip(),
                                                "vcpus": cpu[1].strip(), "rows": rows,
                                                "sizes": sizes}, indent=1) + "\n")
    print(report, end="")


if __name__ == "__main__":
    main(*sys.argv[1:4])
