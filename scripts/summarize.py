#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn one VM run's output directory into the kthread-rs verdict.

Counts KUnit/KTAP test cases (leaf results) from the ktap.* files, adds the compile-fail
results, treats every kernel splat in dmesg and every kmemleak report as a failure, prints
each failure, and ends with the line `N passed, N failed, N skipped`. Exit status 1 on any
failure.
"""
import re
import sys
from pathlib import Path

SPLATS = [
    r"\] WARNING: ", r"------------\[ cut here \]------------", r"\bBUG: ", r"Oops: ",
    r"KASAN: ", r"UBSAN: ", r"possible circular locking", r"possible recursive locking",
    r"inconsistent lock state", r"INFO: task .* blocked for more than", r"soft lockup",
    r"hard LOCKUP", r"Kernel panic", r"general protection fault", r"ODEBUG: ",
    r"list_(add|del) corruption", r"suspicious RCU usage", r"refcount_t: ",
    r"sleeping function called from invalid context", r"DEBUG_LOCKS_WARN_ON",
]
SPLAT_RE = re.compile("|".join(SPLATS))
RESULT_RE = re.compile(r"^(\s*)(ok|not ok) \d+ (?:- )?(\S+)(.*)$")


def splats(lines):
    """Yield (first line index, the splat's 25 lines, its 40 lines of trace) for each kernel splat
    in `lines`. One splat prints several markers ("cut here", "WARNING: CPU:", ...): each counts
    once."""
    end = -1
    for i, line in enumerate(lines):
        if i > end and SPLAT_RE.search(line):
            end = i + 25
            yield i, lines[i:i + 25], "\n".join(lines[i:i + 40])


def ktap_cases(text):
    """Yield (name, status) for each leaf test case of a KTAP document."""
    lines = text.splitlines()
    results = []
    for i, line in enumerate(lines):
        m = RESULT_RE.match(line)
        if m:
            results.append((len(m.group(1)), m.group(2), m.group(3), m.group(4), i))
    # A result line is a leaf unless the next deeper-indented results belong to it, i.e. the
    # result directly before it (in file order) is more deeply indented.
    prev_indent = None
    for indent, status, name, rest, _ in results:
        is_parent = prev_indent is not None and prev_indent > indent
        prev_indent = indent
        if is_parent:
            continue
        if "# SKIP" in rest:
            yield name, "skip"
        else:
            yield name, "pass" if status == "ok" else "fail"


def main(out):
    out = Path(out)
    passed = failed = skipped = 0
    problems = []
    parts = {}
    for f in sorted(out.glob("ktap.*")):
        suite = f.name.split(".", 2)[2]
        # ktap.<module>.<suite> from KUnit; ktap.guest.<check> from the guest script.
        source = "guest" if f.name.startswith("ktap.guest.") else "kunit"
        counts = parts.setdefault(f"{source} {suite}", [0, 0, 0])
        text = f.read_text(errors="replace")
        # A program that stopped early printed fewer top-level results than its plan: the
        # missing ones fail.
        plan = re.search(r"^1\.\.(\d+)$", text, flags=re.M)
        top = len(re.findall(r"^(?:ok|not ok) \d+ ", text, flags=re.M))
        if plan and top < int(plan.group(1)):
            missing = int(plan.group(1)) - top
            failed += missing
            counts[1] += missing
            problems.append(f"FAIL {source} {suite}: {missing} of {plan.group(1)} results missing")
        for name, st in ktap_cases(text):
            if st == "pass":
                passed += 1
                counts[0] += 1
            elif st == "skip":
                skipped += 1
                counts[2] += 1
            else:
                failed += 1
                counts[1] += 1
                problems.append(f"FAIL {source} {suite}: {name}")
    # kunit.py's run of the in-tree series (scripts/kunit.sh): its JSON results, per suite.
    kj = out / "kunitpy.json"
    if (out / "kunitpy.ran").exists():
        try:
            import json
            data = json.loads(kj.read_text())
        except (OSError, ValueError):
            data = None
            failed += 1
            problems.append("FAIL kunit.py: no results (see out/check/kunit.log)")

        def walk(node, suite):
            nonlocal passed, failed, skipped
            for c in node.get("test_cases", []):
                counts = parts.setdefault(f"kunit.py {suite}", [0, 0, 0])
                st = c.get("status")
                if st == "PASS":
                    passed += 1
                    counts[0] += 1
                elif st == "SKIP":
                    skipped += 1
                    counts[2] += 1
                else:
                    failed += 1
                    counts[1] += 1
                    problems.append(f"FAIL kunit.py {suite}: {c.get('name')} ({st})")
            for sub in node.get("sub_groups", []):
                walk(sub, sub.get("name", suite))

        if data is not None:
            walk(data, data.get("name", "kunit.py"))
    for cf in sorted(out.glob("*.results")):
        for line in cf.read_text().splitlines():
            status, _, name = line.partition(" ")
            if cf.stem == "lint":
                kind = "lint (rustfmt, clippy, rustdoc, contexts)"
            elif cf.stem == "tail-call":
                kind = "tail calls (objdump)"
            elif cf.stem == "model":
                kind = "model checks (loom, tools/model) and their mutants"
            elif cf.stem == "series":
                kind = "the in-tree series (make series)"
            elif cf.stem == "checkpatch":
                kind = "checkpatch --strict (the in-tree series)"
            elif cf.stem.startswith("kver2-"):
                kind = f"Linux {cf.stem[6:]} builds (modules, compile-fail, doc examples)"
            elif name.startswith("doc_"):
                kind = "doc examples (must build)"
            else:
                kind = "compile-fail"
            counts = parts.setdefault(kind, [0, 0, 0])
            if status == "pass":
                passed += 1
                counts[0] += 1
            else:
                failed += 1
                counts[1] += 1
                problems.append(f"FAIL {kind} {name}: {status}")
    errors = out / "errors"
    if errors.exists():
        for line in errors.read_text().splitlines():
            failed += 1
            problems.append(f"FAIL guest: {line}")
    if not (out / "done").exists():
        failed += 1
        problems.append("FAIL guest: the VM run did not finish (timeout, hang or crash)")
    dmesg = out / "dmesg"
    if dmesg.exists():
        lines = dmesg.read_text(errors="replace").splitlines()
        # The atomic-context probes (scripts/guest-unload.sh) report on purpose, between
        # markers; that test checks what they printed. Everything else counts.
        inside = False
        kept = []
        for line in lines:
            if "kthread-rs: expected splats begin" in line:
                inside = True
            elif "kthread-rs: expected splats end" in line:
                inside = False
            elif not inside:
                kept.append(line)
        for _, splat, _ in splats(kept):
            failed += 1
            problems.append("FAIL dmesg splat:\n    " + "\n    ".join(splat))
    elif (out / "done").exists():
        failed += 1
        problems.append("FAIL guest: no dmesg saved")
    # The console of kunit.py's boot: a splat there fails too.
    # Known splats of the kernel's own code, not of the series, that its debug options report:
    # (pattern in the splat's trace, why it is not counted).
    upstream = [
        ("rust_doctest_kernel_time_hrtimer_rs",
         "7.2's hrtimer doctests set up timers on the stack without the _on_stack variant "
         "(ODEBUG with CONFIG_DEBUG_OBJECTS)"),
    ]
    console = out / "kunitpy-console.log"
    if console.exists():
        for _, splat, trace in splats(console.read_text(errors="replace").splitlines()):
            known = [why for pat, why in upstream if pat in trace]
            if known:
                print(f"  (not counted: a kunit.py console splat of upstream code: {known[0]})")
                continue
            failed += 1
            problems.append("FAIL kunit.py console splat:\n    " + "\n    ".join(splat))
    for kl in sorted(out.glob("kmemleak.*")):
        text = kl.read_text(errors="replace")
        for rep in re.split(r"(?=^unreferenced object)", text, flags=re.M):
            if rep.startswith("unreferenced object"):
                failed += 1
                problems.append(f"FAIL {kl.name}:\n    " + "\n    ".join(rep.splitlines()[:20]))
    for p in problems:
        print(p)
    for kind, (p, f, s) in parts.items():
        print(f"  {kind}: {p} passed, {f} failed, {s} skipped")
    if passed + failed == 0:
        print("FAIL: no test ran")
        failed = 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
