#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the dmesg of `make bench`'s boots into the table of medians and Rust/C ratios.

Each round gives one median (and one p99) per operation and implementation; the table shows
the median over all rounds of all boots. With several boots it also shows each boot's Rust/C
(from that boot's rounds) and their spread: (largest - smallest) / smallest.
Writes OUTDIR/bench.txt and OUTDIR/bench.json.
Usage: bench-report.py OUTDIR KERNEL MODE QEMU BOOTS
"""
import json
import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"krs-bench: impl=(\w+) round=(\d+) op=(\w+) n=(\d+) median_ns=(\d+) p99_ns=(\d+)")
SIZE = re.compile(r"krs-bench: impl=(\w+) round=\d+ size=(\w+) bytes=(\d+)")


def parse(text, runs, order, sizes):
    for impl, _rnd, op, _n, med, p99 in LINE.findall(text):
        runs.setdefault((op, impl), []).append((int(med), int(p99)))
        if op not in order:
            order.append(op)
    for impl, name, b in SIZE.findall(text):
        sizes.setdefault(name, {}).setdefault(impl, []).append(int(b))


def ratio(runs, op):
    c, r = runs.get((op, "c"), []), runs.get((op, "rust"), [])
    if not c or not r:
        return None
    cm = statistics.median(m for m, _ in c)
    return statistics.median(m for m, _ in r) / cm if cm else None


def main(out, kernel, mode, qemu, boots):
    out = Path(out)
    boots = int(boots)
    runs, order, sizes, per_boot, failed = {}, [], {}, [], []
    for b in range(1, boots + 1):
        text = (out / f"boot{b}" / "dmesg").read_text(errors="replace")
        one = {}
        parse(text, one, order, sizes)
        per_boot.append(one)
        for key, v in one.items():
            runs.setdefault(key, []).extend(v)
        failed += [f"boot {b}: {i}: {e}" for i, e in re.findall(r"krs-bench: impl=(\w+) failed: (.*)", text)]
    cpu_file = out / "boot1" / "cpu"
    cpu = (cpu_file.read_text().split("\n") + ["?"] * 3) if cpu_file.exists() else ["?"] * 3
    rows = []
    for op in order:
        c, r = runs.get((op, "c"), []), runs.get((op, "rust"), [])
        if not c or not r:
            continue
        cm = statistics.median(m for m, _ in c)
        rm = statistics.median(m for m, _ in r)
        row = {"op": op, "rounds": min(len(c), len(r)), "c_median_ns": cm, "rust_median_ns": rm,
               "ratio": rm / cm if cm else None,
               "c_p99_ns": statistics.median(p for _, p in c),
               "rust_p99_ns": statistics.median(p for _, p in r)}
        if boots > 1:
            rs = [ratio(one, op) for one in per_boot]
            row["boot_ratios"] = rs
            if all(rs):
                row["spread"] = max(rs) / min(rs) - 1
        rows.append(row)
    head = [f"kthread-rs benchmarks: kernel {kernel}; {mode}",
            f"{qemu}; {cpu[1].strip()} vCPUs ({cpu[0].strip()}), clocksource {cpu[2].strip()}",
            f"{boots} boot(s); medians over all rounds, C and Rust alternating in each boot"]
    lines = head + ["", f"{'operation':30} {'rounds':>6} {'C median':>12} {'Rust median':>12} {'Rust/C':>7}"
                    f" {'C p99':>12} {'Rust p99':>12}"
                    + ("".join(f" {'boot' + str(b):>6}" for b in range(1, boots + 1)) + "  spread"
                       if boots > 1 else "")]
    for x in rows:
        line = (f"{x['op']:30} {x['rounds']:>6} {x['c_median_ns']:>10.0f}ns {x['rust_median_ns']:>10.0f}ns"
                f" {x['ratio']:>7.3f} {x['c_p99_ns']:>10.0f}ns {x['rust_p99_ns']:>10.0f}ns")
        if boots > 1:
            line += "".join(f" {r:>6.3f}" if r else "      -" for r in x["boot_ratios"])
            line += f" {100 * x['spread']:>6.2f}%" if "spread" in x else "      -"
        lines.append(line)
    med_sizes = {name: {i: int(statistics.median(v)) for i, v in d.items()} for name, d in sizes.items()}
    lines += ["", f"{'size (bytes)':30} {'C':>6} {'Rust':>6}"]
    for name, v in med_sizes.items():
        lines.append(f"{name:30} {v.get('c', '-'):>6} {v.get('rust', '-'):>6}")
    if failed:
        lines += ["", "FAILED: " + "; ".join(failed)]
    report = "\n".join(lines) + "\n"
    (out / "bench.txt").write_text(report)
    (out / "bench.json").write_text(json.dumps({"kernel": kernel, "mode": mode, "qemu": qemu,
                                                "cpu": cpu[0].strip(), "vcpus": cpu[1].strip(),
                                                "clocksource": cpu[2].strip(), "boots": boots,
                                                "rows": rows, "sizes": med_sizes}, indent=1) + "\n")
    print(report, end="")


if __name__ == "__main__":
    main(*sys.argv[1:6])
