#!/usr/bin/env python3
"""Builds every Rust code block of README.md and docs/*.md as a user would, outside the
repository, and runs the README's Quick start.

The rules (CONTRIBUTING.md, "Code blocks in the docs"):
- A block fenced ```rust is compiled; ```rust,ignore (or any other language) is not.
- The README's Quick start (its first Rust block, a whole program) is built in a crate of
  its own whose [dependencies] are exactly the README's Quick start ```toml block, with
  the repository checked out beside it as `../traitrpc`, as the README tells users to do.
  Then it runs, and must print what the README says it prints.
- Every other block is compiled as a module of the Quick start program (`use super::*`,
  so it can use the Quick start's `Calculator`), in a second crate with the same
  dependencies but `traitrpc` with every feature the README's dependency line names.
  A block that has its own `fn main` is built as a program of its own instead.

Usage: python3 .ci/doc-blocks.py [--keep]  (CARGO_TARGET_DIR is shared with .ci's other
user crates, target/external-user).
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(\s*)```(.*)$")


def blocks(text):
    """Yields (first line number, info string, code) for each fenced block of a text."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, info = m.group(1), m.group(2).strip()
        start = i + 1
        i += 1
        body = []
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        yield start, info, "\n".join(body) + "\n"


def is_compiled(info):
    words = [w.strip() for w in info.split(",")]
    return words[0] == "rust" and "ignore" not in words


def quick_start(readme):
    """The README's Quick start: its toml dependencies, its program, what it prints."""
    text = readme.read_text()
    section = text[text.index("## Quick start"):]
    found = list(blocks(section))
    toml = next(code for _, info, code in found if info == "toml")
    program = next(code for _, info, code in found if is_compiled(info))
    output = next(code for _, info, code in found if info == "text")
    return toml, program, output


def features_named(toml):
    """The features the traitrpc dependency line's comment lists ("features: a, b (default), c")."""
    line = next(l for l in toml.splitlines() if l.startswith("traitrpc"))
    listed = line.split("features:", 1)[1]
    return [re.sub(r"\(.*?\)", "", f).strip() for f in listed.split(",") if f.strip()]


def write_crate(root, name, dependencies, main):
    (root / name / "src").mkdir(parents=True)
    (root / name / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\npublish = false\n\n'
        f"{dependencies}\n[workspace]\n"
    )
    (root / name / "src" / "main.rs").write_text(main)
    return root / name / "Cargo.toml"


def cargo(args, manifest, capture=False):
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", str(REPO / "target" / "external-user"))
    cmd = ["cargo", *args, "--quiet", "--manifest-path", str(manifest)]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)


def main():
    keep = "--keep" in sys.argv
    work = pathlib.Path(tempfile.mkdtemp(prefix="doc-blocks-"))
    try:
        # The layout the README asks for: this repository as ../traitrpc of the user crate.
        (work / "traitrpc").symlink_to(REPO)
        toml, program, expected = quick_start(REPO / "README.md")

        # 1. The Quick start, with exactly the README's dependencies, built and run.
        manifest = write_crate(work, "quickstart", toml, program)
        run = cargo(["run"], manifest, capture=True)
        got = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", run.stdout)
        if got.strip() != expected.strip():
            sys.exit(f"the Quick start printed:\n{got}\nthe README says:\n{expected}")
        print(f"quick start ran and printed what the README says ({len(got.splitlines())} lines)")

        # 2. Every other block, as a module of the Quick start (or a program of its own).
        features = features_named(toml)
        line = next(l for l in toml.splitlines() if l.startswith("traitrpc"))
        path = re.search(r'path = "([^"]+)"', line).group(1)
        all_features = toml.replace(
            line, f'traitrpc = {{ path = "{path}", features = {features!r} }}'.replace("'", '"'))
        modules, programs, count = [], [], 0
        for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
            for line_no, info, code in blocks(doc.read_text()):
                if not is_compiled(info) or code == program:
                    continue
                count += 1
                where = f"{doc.relative_to(REPO)}:{line_no}"
                if re.search(r"\bfn main\s*\(", code):
                    programs.append((where, code))
                    continue
                name = re.sub(r"\W", "_", where.lower())
                modules.append(
                    f"/// {where}\n#[allow(dead_code, unused_imports, unused_variables)]\n"
                    f"mod {name} {{\n    use super::*;\n\n{code}}}\n"
                )
        manifest = write_crate(work, "snippets", all_features, program + "\n" + "\n".join(modules))
        cargo(["build"], manifest)
        for i, (where, code) in enumerate(programs):
            manifest = write_crate(work, f"program{i}", all_features, f"// {where}\n{code}")
            cargo(["build"], manifest)
        print(f"{count} more Rust blocks compiled ({len(programs)} as programs of their own)")
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
