#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""H22's static half: every public function of the abstractions says in which context it may
be called, and every one that may sleep reports misuse from its entry.

For each `pub fn` / `pub unsafe fn` under the given directory (crate-visible and private ones
are not the API), the rustdoc above it must have a `# Context` section; if that section says
"May sleep", the function's body must call `might_sleep()` (so a debug kernel reports a call
from atomic context every time, not only when the slow path is taken).

Usage: check-contexts.py DIR. Prints each problem, then "pass contexts" or "fail contexts";
exit status 1 on any problem.
"""
import re
import sys
from pathlib import Path

PUB_FN = re.compile(r"^\s*pub (?:const )?(?:unsafe )?fn (\w+)")


def body_of(lines, i):
    """The text of the function whose signature starts at line i, up to its closing brace."""
    depth = 0
    seen = False
    out = []
    for line in lines[i:]:
        out.append(line)
        # Strings and comments with braces are rare in this code; good enough for a lint.
        code = line.split("//", 1)[0]
        for ch in code:
            if ch == "{":
                depth += 1
                seen = True
            elif ch == "}":
                depth -= 1
        if seen and depth == 0:
            break
        if not seen and code.rstrip().endswith(";"):
            break  # a declaration without a body (trait method)
    return "\n".join(out)


def doc_above(lines, i):
    """The `///` doc lines right above line i (attributes in between are skipped)."""
    doc = []
    j = i - 1
    while j >= 0:
        s = lines[j].strip()
        if s.startswith("///"):
            doc.append(s[3:].strip())
        elif s.startswith("#[") or s == "":
            if s == "" and doc:
                break
        else:
            break
        j -= 1
    return list(reversed(doc))


def context_section(doc):
    """The lines of the `# Context` section of a doc comment, or None."""
    if "# Context" not in doc:
        return None
    k = doc.index("# Context") + 1
    sec = []
    while k < len(doc) and not doc[k].startswith("# "):
        sec.append(doc[k])
        k += 1
    return " ".join(sec)


def main(root):
    problems = []
    count = 0
    for path in sorted(Path(root).rglob("*.rs")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = PUB_FN.match(line)
            if not m:
                continue
            count += 1
            where = f"{path}:{i + 1} {m.group(1)}"
            sec = context_section(doc_above(lines, i))
            if sec is None:
                problems.append(f"{where}: no `# Context` section")
                continue
            if "May sleep" in sec and "might_sleep()" not in body_of(lines, i):
                problems.append(f"{where}: documented 'May sleep' but no might_sleep() at its entry")
    for p in problems:
        print(p)
    print(f"{count} public functions checked")
    print(("fail" if problems else "pass") + " contexts")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
