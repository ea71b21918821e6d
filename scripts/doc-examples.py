#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Extract the rustdoc examples of rust/kthread_rs/ into build cases, so that they cannot rot.

Out-of-tree modules have no doctest runner, so the examples are marked `ignore` for rustdoc
and built here instead: each becomes `OUTDIR/doc_<file>_<n>.rs` with the header
`// expect: builds`, its lines (hidden `# ` lines included) wrapped in a function that returns
`Result`, for scripts/compile-fail.sh to build. Usage: doc-examples.py SRCDIR OUTDIR
"""
import re
import sys
from pathlib import Path


def examples(text):
    """Yield the code lines of each ```ignore block of the `///` and `//!` doc comments."""
    block = None
    for line in text.splitlines():
        m = re.match(r"^\s*//[/!] ?(.*)$", line)
        if not m:
            block = None
            continue
        doc = m.group(1)
        if block is None:
            if doc.strip() == "```ignore":
                block = []
        elif doc.strip() == "```":
            yield block
            block = None
        else:
            block.append(doc[2:] if doc.startswith("# ") else ("" if doc == "#" else doc))


def main(src, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted(Path(src).glob("*.rs")):
        for i, code in enumerate(examples(f.read_text())):
            uses = [l for l in code if l.startswith("use ")]
            body = [l for l in code if not l.startswith("use ")]
            name = f"doc_{f.stem}_{i + 1}"
            text = [f"// expect: builds", f"// Example {i + 1} of the rustdoc of rust/kthread_rs/{f.name}.",
                    "#[allow(dead_code, unused_variables, unused_mut, unused_imports)]",
                    f"fn {name}() -> Result {{"]
            text += ["    " + l for l in uses + body]
            text += ["}", ""]
            (out / f"{name}.rs").write_text("\n".join(text))
            n += 1
    print(n)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
