#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Write the in-tree form of kthread-rs as a git-am series onto a pristine kernel tree.

One source of truth: every Rust line lives once, under rust/kthread_rs/ (and the in-tree sample
under samples/rust/rust_kthread.rs). The in-tree files are derived from them here:

- rust/kthread_rs/X becomes rust/kernel/kthread/X; paths `kthread_rs::` become `kthread::`
  (`kernel::kthread::` in doc examples) and `use kernel::` becomes `use crate::`;
- an item under `#[cfg(MODULE)]` is the out-of-tree form of something: it is dropped, and the
  `#[cfg(not(MODULE))]` attribute of its in-tree twin is dropped (the item stays). The two cfgs
  are exact, not a convention: out-of-tree code is always built as a module, the kernel crate
  never is, so the in-tree tree builds the same items with or without this step;
- `compat.rs` (the 7.2/7.3 shims of the out-of-tree callers) and `registry/reaper.rs` (the reaper
  that a module runs for itself) are declared under `#[cfg(MODULE)]`: not part of the kernel crate;
- doc examples lose `ignore`: in the tree they are doctests (CONFIG_RUST_KERNEL_DOCTESTS).

Usage: series.py SRC_ROOT KERNEL_GIT_REPO BASE_REF OUT_DIR
The repository is checked out at BASE_REF, one commit per patch is made on branch
`kthread-rs-series`, and `git format-patch` writes OUT_DIR/*.patch with a cover letter.
"""

import os
import re
import subprocess
import sys
import textwrap

AUTHOR = "kthread-rs developers <kthread-rs@localhost>"
DATE = "2026-11-26T00:00:00Z"
SOB = "Signed-off-by: " + AUTHOR


def cfg_value(pred):
    """Evaluate a cfg predicate with MODULE unset and everything else unknown: True, False or
    None (unknown)."""
    pred = pred.strip()
    m = re.match(r"^(all|any|not)\((.*)\)$", pred, re.S)
    if not m:
        return False if pred == "MODULE" else None
    args, depth, cur = [], 0, ""
    for ch in m.group(2):
        if ch == "," and depth == 0:
            args.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    if cur.strip():
        args.append(cur)
    vals = [cfg_value(a) for a in args]
    if m.group(1) == "not":
        return None if vals[0] is None else not vals[0]
    if m.group(1) == "all":
        return False if False in vals else (True if all(v is True for v in vals) else None)
    return True if True in vals else (False if all(v is False for v in vals) else None)


def strip_cfg_module(text):
    """Drop the items whose `#[cfg(..)]` is false in the kernel crate (MODULE unset), with their
    doc comments and other attributes, and the `#[cfg(..)]` attributes that are true there. A
    cfg that names MODULE must decide one way or the other."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        m = re.match(r"^#\[cfg\((.*)\)\]$", s)
        if not m or not re.search(r"\bMODULE\b", m.group(1)):
            out.append(line)
            i += 1
            continue
        v = cfg_value("all(" + m.group(1) + ")")
        if v is None:
            sys.exit(f"series.py: cannot decide #[cfg({m.group(1)})] for the kernel crate")
        if v:
            i += 1
            continue
        # Remove the doc comments and attributes just before it (already emitted).
        while out and (out[-1].strip().startswith("///") or out[-1].strip().startswith("#[")):
            out.pop()
        # Skip further attributes, then the item up to its matching brace or semicolon.
        i += 1
        while lines[i].strip().startswith("#["):
            i += 1
        depth = 0
        started = False
        while i < len(lines):
            code = re.sub(r"//.*", "", lines[i])
            code = re.sub(r'"(\\.|[^"\\])*"', '""', code)
            depth += code.count("{") - code.count("}")
            if "{" in code:
                started = True
            i += 1
            if (started and depth == 0) or (not started and code.rstrip().endswith(";")):
                break
        # A blank line left doubled by the removal.
        if out and not out[-1].strip() and i < len(lines) and not lines[i].strip():
            i += 1
    return "\n".join(out)


def to_in_tree_rs(text, path):
    text = strip_cfg_module(text)
    out = []
    in_code = False
    for line in text.split("\n"):
        s = line.lstrip()
        doc = s.startswith("//!") or s.startswith("///")
        if doc and "```" in s:
            in_code = not in_code
        if doc and in_code:
            # A doctest is a crate of its own: the kernel crate is `kernel`.
            line = re.sub(r"\bcrate::", "kernel::", line)
        if doc:
            line = line.replace("```ignore", "```")
            m = re.match(r"^(\s*//[!/] )# let (\w+) = kthread_rs::compat::this_module\(\);$", line)
            if m:
                # A doctest is built in: its `THIS_MODULE` is null.
                p = m.group(1) + "# "
                out.append(p + "// SAFETY: A doctest is built into the kernel: its `THIS_MODULE` is null.")
                out.append(p + "static DOCTEST_MODULE: ThisModule =")
                out.append(p + "    unsafe { ThisModule::from_ptr(core::ptr::null_mut()) };")
                out.append(p + f"let {m.group(2)} = &DOCTEST_MODULE;")
                continue
            line = re.sub(r"\bkthread_rs::", "kernel::kthread::", line)
            # The model checker lives in kthread-rs, not in the kernel tree.
            line = line.replace("This file is model-checked on the host (`tools/model`, `make model`):",
                                "kthread-rs model-checks this file on the host:")
        else:
            line = re.sub(r"\bcrate::kthread_rs::", "crate::kthread::", line)
            line = re.sub(r"\bkthread_rs::", "kthread::", line)
            line = re.sub(r"^(\s*)(pub(\([a-z]+\))? )?use kernel::", r"\1\2use crate::", line)
        out.append(line)
    text = "\n".join(out)
    if path.endswith("kthread_rs/mod.rs"):
        text = in_tree_root_doc(text)
    return text


def in_tree_root_doc(text):
    """The crate-root module doc: the out-of-tree inclusion note does not apply."""
    text = re.sub(r"//! kthread-rs: safe Rust APIs", "//! Kernel threads: safe Rust APIs", text)
    text = re.sub(r"//!\n//! This is not a crate of its own:.*?//! ```\n", "", text, flags=re.S)
    text = re.sub(r"//! - \[`compat`\].*\n(//!   .*\n)*", "", text)
    text = re.sub(r"pub mod compat;\n", "", text)
    return text


# Files whose `mod` items are `#[cfg(MODULE)]`: out-of-tree only.
OUT_OF_TREE = {"compat.rs", "registry/reaper.rs"}


def rust_files(src):
    base = os.path.join(src, "rust/kthread_rs")
    files = {}
    for root, _, names in os.walk(base):
        for n in sorted(names):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, base)
            if not n.endswith(".rs") or rel in OUT_OF_TREE:
                continue
            with open(p) as f:
                files["rust/kernel/kthread/" + rel] = to_in_tree_rs(f.read(), p)
    return files


def git(repo, *args, **kw):
    env = dict(os.environ, GIT_AUTHOR_DATE=DATE, GIT_COMMITTER_DATE=DATE,
               GIT_AUTHOR_NAME="kthread-rs developers", GIT_AUTHOR_EMAIL="kthread-rs@localhost",
               GIT_COMMITTER_NAME="kthread-rs developers", GIT_COMMITTER_EMAIL="kthread-rs@localhost")
    return subprocess.run(["git", "-C", repo] + list(args), check=True, env=env,
                           stdout=subprocess.PIPE, text=True, **kw).stdout


def insert_sorted(text, line, prefix):
    """Insert `line` among the consecutive lines starting with `prefix`, in sorted order."""
    lines = text.split("\n")
    idx = [i for i, l in enumerate(lines) if l.startswith(prefix)]
    pos = idx[-1] + 1
    for i in idx:
        if lines[i] > line:
            pos = i
            break
    lines.insert(pos, line)
    return "\n".join(lines)


def edit(repo, path, fn):
    p = os.path.join(repo, path)
    with open(p) as f:
        old = f.read()
    new = fn(old)
    if new == old:
        sys.exit(f"series.py: edit of {path} changed nothing")
    with open(p, "w") as f:
        f.write(new)


def write(repo, path, text):
    p = os.path.join(repo, path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def root_mod(text, mods):
    """The kthread root module with only `mods` declared (for the patches before the last)."""
    out = []
    for line in text.split("\n"):
        m = re.match(r"^(pub(\(crate\))? )?mod ([a-z_]+);$", line)
        if m and m.group(3) not in mods:
            continue
        m = re.match(r"^//! - \[?`([a-z_]+)`", line)
        if m and m.group(1) not in mods:
            continue
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def main():
    src, repo, base, outdir = sys.argv[1:5]
    outdir = os.path.abspath(outdir)
    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.join(src, "scripts/series"))
    import patches  # scripts/series/patches.py: the split, the messages, the non-Rust edits

    files = rust_files(src)
    with open(os.path.join(src, patches.SAMPLE)) as f:
        sample = f.read()

    git(repo, "checkout", "-q", "-f", "-B", "kthread-rs-series", base)
    git(repo, "clean", "-q", "-f", "-d", "-x")
    root = files["rust/kernel/kthread/mod.rs"]
    done_mods = set()
    for p in patches.PATCHES:
        for path, fn in p.get("edits", []):
            edit(repo, path, fn)
        for path, text in p.get("add", {}).items():
            write(repo, path, text)
        for prefix in p.get("rust", []):
            for path, text in files.items():
                if path.startswith("rust/kernel/kthread/" + prefix) and path != "rust/kernel/kthread/mod.rs":
                    write(repo, path, text)
        done_mods |= set(p.get("mods", []))
        if p.get("mods"):
            write(repo, "rust/kernel/kthread/mod.rs", root_mod(root, done_mods))
        if p.get("sample"):
            write(repo, "samples/rust/rust_kthread.rs", sample)
        git(repo, "add", "-f", "-A", ".")
        paras = [textwrap.fill(" ".join(q.split()), 72) for q in p["body"].strip().split("\n\n")]
        msg = p["subject"] + "\n\n" + "\n\n".join(paras) + "\n\n" + SOB + "\n"
        git(repo, "commit", "-q", "--author", AUTHOR, "-F", "-", input=msg)

    # Every module of the source is declared once all patches are in.
    final = os.path.join(repo, "rust/kernel/kthread/mod.rs")
    with open(final) as f:
        if f.read() != (root if root.endswith("\n") else root + "\n"):
            sys.exit("series.py: the last patch does not declare every module of rust/kthread_rs/mod.rs")
    left = [p for p in files if not os.path.exists(os.path.join(repo, p))]
    if left:
        sys.exit("series.py: files in no patch: " + " ".join(left))

    os.makedirs(outdir, exist_ok=True)
    for n in os.listdir(outdir):
        if n.endswith(".patch"):
            os.unlink(os.path.join(outdir, n))
    git(repo, "format-patch", "-q", "--cover-letter", "--no-signature", "--zero-commit",
        "--base", base, "-o", outdir, base + "..HEAD")
    cover = [n for n in os.listdir(outdir) if n.startswith("0000-")][0]
    cp = os.path.join(outdir, cover)
    with open(cp) as f:
        text = f.read()
    with open(os.path.join(src, patches.COVER)) as f:
        subject, _, blurb = f.read().partition("\n\n")
    text = text.replace("*** SUBJECT HERE ***", subject.strip())
    text = text.replace("*** BLURB HERE ***", blurb.strip() + "\n\n" + SOB)
    with open(cp, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
