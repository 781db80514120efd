"""A working copy of this repository in a temporary folder, for tests that run what a user runs
(README walkthroughs, edits to protos/ and istio/) without touching the real one.

The copy is a `git clone` (so `main` exists for `make breaking`) with the working tree's files laid
over it, modification times kept: make then sees exactly what it sees here, and reuses the builds.
The heavy, shared installs are linked, not copied (`.venv`, `.tools`, buf's
`tools/proto/node_modules`); `.build`, the TypeScript `dist/` folders and `node_modules` (100 MB: its
workspace links are relative, so a build in the copy compiles the copy's sources) are copied: a
build in the copy must not overwrite the repository's."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
LINKED = (".venv", ".tools", "tools/proto/node_modules")
COPIED = (".build", "node_modules", "services/pricing/dist", "mesh/runtime-ts/dist", "tests/conformance/probes/ts/dist")


def _git(*args: str, cwd: pathlib.Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def repo_copy(dest: pathlib.Path) -> pathlib.Path:
    """Make `dest` (absent or empty) a copy of the repository as it is now; return it."""
    _git("clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest))
    if not _git("branch", "--list", "main", cwd=dest).strip():  # cloned from another branch (a worktree)
        _git("branch", "main", "origin/main", cwd=dest)
    files = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for name in _git("ls-files", "-z", "--deleted").split("\0"):
        if name:
            (dest / name).unlink(missing_ok=True)
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, symlinks=True, dirs_exist_ok=True)
    for name in LINKED:
        target = (ROOT / name).resolve()
        if target.exists() and not (dest / name).exists():
            os.symlink(target, dest / name)
    return dest
