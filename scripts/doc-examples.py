#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Extract the code examples of the rustdoc and of the guide into build cases, so they cannot rot.

Out-of-tree modules have no doctest runner, so the rustdoc examples of rust/kthread_rs/**/*.rs are
marked `ignore` for rustdoc and built here instead, as are the `.. code-block:: rust` blocks of
Documentation/*.rst: each becomes `OUTDIR/doc_<file>_<n>.rs` with the header
`// expect: builds`, its lines (hidden `# ` lines included) wrapped in a function that returns
`Result`, for scripts/compile-fail.sh to build. Usage: doc-examples.py SRCDIR OUTDIR [DOCDIR]
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


def rst_examples(text):
    """Yield the code lines of each `.. code-block:: rust` block of a reStructuredText file."""
    block = None
    for line in text.splitlines() + [""]:
        if block is None:
            if line.strip() == ".. code-block:: rust":
                block = []
            continue
        if line.strip() == "" or line.startswith("   "):
            block.append(line[3:])
            continue
        yield trim(block)
        block = None
        if line.strip() == ".. code-block:: rust":
            block = []
    if block:
        yield trim(block)


def trim(lines):
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return [l[2:] if l.startswith("# ") else l for l in lines]


def main(src, out, docs=None):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    sources = [(f, examples(f.read_text())) for f in sorted(Path(src).rglob("*.rs"))]
    if docs:
        sources += [(f, rst_examples(f.read_text())) for f in sorted(Path(docs).glob("*.rst"))]
    for f, found in sources:
        for i, code in enumerate(found):
            uses = [l for l in code if l.startswith("use ")]
            body = [l for l in code if not l.startswith("use ")]
            rel = f.relative_to(src) if f.suffix == ".rs" else f.name
            stem = str(rel.with_suffix("")).replace("/", "_") if f.suffix == ".rs" else f.stem
            name = f"doc_{stem}_{i + 1}" if f.suffix == ".rs" else f"doc_guide_{stem}_{i + 1}"
            where = f"the rustdoc of rust/kthread_rs/{rel}" if f.suffix == ".rs" else f"Documentation/{f.name}"
            text = [f"// expect: builds", f"// Example {i + 1} of {where}.",
                    "#[allow(dead_code, unused_variables, unused_mut, unused_imports)]",
                    f"fn {name}() -> Result {{"]
            text += ["    " + l for l in uses + body]
            # A guide example is a list of statements: the wrapper ends it.
            text += (["    Ok(())"] if f.suffix == ".rst" else []) + ["}", ""]
            (out / f"{name}.rs").write_text("\n".join(text))
            n += 1
    print(n)


if __name__ == "__main__":
    main(*sys.argv[1:4])
