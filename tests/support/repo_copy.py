"""A working copy of the repository in a temporary folder, for tests that change the repository
itself (`meshctl new service`, the README walkthroughs): every file git tracks or would track (the
working tree as it is, uncommitted changes included), the builds that make it fast (.build, the
TypeScript dist/ folders, mtimes kept so make and tsc see them up to date), and links to the heavy
shared installs (.venv, .tools, tools/proto/node_modules). node_modules is copied on request (100 MB,
3 s; its workspace links are relative, so they point into the copy); otherwise `make build` in the
copy runs npm ci (a test that adds a workspace needs that). `commit_as_main` gives the copy a git
history of its own: its working tree as the one commit of `main` (what `make breaking` compares with).

    root = repo_copy.make(ROOT, tmp_path / "repo")
    repo_copy.commit_as_main(root)
    subprocess.run(["make", *repo_copy.MAKE_SHARED, "build"], cwd=root, env=repo_copy.env(root))
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

__all__ = ["LINKED", "MAKE_SHARED", "commit_as_main", "env", "make"]

LINKED = (".venv", ".tools", "tools/proto/node_modules")
# The shared installs are taken as they are: make must not redo them in the copy (their inputs'
# mtimes there are the checkout's, not the install's).
MAKE_SHARED = ("-o", ".venv/.installed", "-o", "tools/proto/node_modules/.installed",
               "-o", ".tools/bin/consul", "-o", ".tools/bin/jaeger",
               "-o", ".tools/bin/protoc-gen-go", "-o", ".tools/bin/protoc-gen-go-grpc")
BUILDS = (".build", "mesh/runtime-ts/dist", "services/pricing/dist", "tests/conformance/probes/ts/dist")


def make(source: pathlib.Path, target: pathlib.Path, node_modules: bool = False) -> pathlib.Path:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=source,
                            capture_output=True, check=True).stdout.decode().split("\0")
    linked = set(LINKED)
    for relative in filter(None, listed):
        if relative in linked or any(relative.startswith(f"{link}/") for link in linked):
            continue
        origin = source / relative
        if not origin.exists() and not origin.is_symlink():  # deleted in the working tree
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination, follow_symlinks=False)
    for relative in BUILDS + (("node_modules",) if node_modules else ()):
        if (source / relative).is_dir():
            shutil.copytree(source / relative, target / relative, symlinks=True, dirs_exist_ok=True)
    for relative in LINKED:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((source / relative).resolve(), target / relative)
    return target


def commit_as_main(root: pathlib.Path) -> None:
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=polymesh tests", "-c", "user.email=tests@polymesh.local",
                  "commit", "-q", "-m", "the repository as the test found it"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def env(root: pathlib.Path, **extra: str) -> dict[str, str]:
    """The environment of a command in the copy: its own Python packages first (the venv's editable
    install points at the original), no mesh settings of the caller's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return {**clean, "PYTHONPATH": f"{root}{os.pathsep}{root / 'gen' / 'python'}", **extra}


