#!/usr/bin/env python3
"""Fails if any package in the resolved dependency graph (Cargo.lock, every feature)
declares a higher `rust-version` than the workspace does, so the MSRV we declare is true
for what we build. Reads `cargo metadata`; prints the highest requirements either way."""
import json
import subprocess
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


metadata = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(metadata["workspace_members"])
declared = {
    p["name"]: p.get("rust_version") for p in metadata["packages"] if p["id"] in members
}
workspace = {v for v in declared.values() if v}
if len(workspace) != 1:
    sys.exit(f"workspace members declare different rust-versions: {declared}")
msrv = workspace.pop()
needs = sorted(
    (
        (version(p["rust_version"]), p["name"], p["version"])
        for p in metadata["packages"]
        if p["id"] not in members and p.get("rust_version")
    ),
    reverse=True,
)
above = [(v, n, ver) for v, n, ver in needs if v > version(msrv)]
print(f"workspace rust-version {msrv}; highest in the graph:")
for v, name, ver in needs[:5]:
    print(f"  {name} {ver}: {'.'.join(map(str, v))}")
if above:
    for v, name, ver in above:
        print(f"error: {name} {ver} needs Rust {'.'.join(map(str, v))} > {msrv}")
    sys.exit(1)
