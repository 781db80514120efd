"""The xDS probe clients of tests/xds/probes (grpcio, grpc-go, grpc-js): built, started, read.

    binary = build_go_probe()                       # go build, incremental, to .build/xds-probe-go
    script = install_node_probe()                   # npm ci when node_modules is missing or stale
    command = probe_command("go", "xds:///catalog:7000", interval_ms=1, headers=[("x-user", "a")])
    calls(proc, since)                              # [(t, backend or "error: ...")] from its output
    output = ProbeOutput(proc.log_path); output.read()   # the same, reading only what is new

Each probe calls shop.catalog.v1.CatalogService/GetProduct on an xds:/// target over and over and
prints one JSON line per call: {"t": <unix seconds when the call ended>, "backend": NAME} or
{"t": ..., "error": "CODE: details"}. The tests (tests/xds/conftest.py) and
benchmarks/propagation.py use them.
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["LANGUAGES", "PROBES", "ProbeOutput", "build_go_probe", "calls", "install_node_probe", "parse_line",
           "probe_command"]

REPO = Path(__file__).resolve().parents[2]
PROBES = REPO / "tests" / "xds" / "probes"
BUILD = REPO / ".build"
PYTHON_PROBE = PROBES / "python" / "probe.py"
LANGUAGES = ("python", "go", "node")


def _go_build(package: str, name: str) -> Path:
    """`go build` of a package of the Go probe module into .build/NAME (incremental: quick once built)."""
    binary = BUILD / name
    BUILD.mkdir(exist_ok=True)
    subprocess.run(["go", "build", "-o", str(binary), package], cwd=PROBES / "go", check=True,
                   env={**os.environ, "GOFLAGS": "-mod=readonly"})
    return binary


def build_go_probe() -> Path:
    """The Go probe binary."""
    return _go_build(".", "xds-probe-go")


def build_go_certwatch() -> Path:
    """grpc-go's file-watcher certificate provider on one instance's files (probes/go/certwatch)."""
    return _go_build("./certwatch", "certwatch-go")


def install_node_probe() -> Path:
    """The Node probe script; `npm ci` runs when node_modules is missing or older than the lock."""
    directory = PROBES / "node"
    installed = directory / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (directory / "package-lock.json").stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=directory, check=True)
    return directory / "probe.js"


def probe_command(language: str, target: str, interval_ms: float = 10, headers: Iterable[tuple[str, str]] = (),
                  go_probe: Path | None = None, node_probe: Path | None = None) -> list[str]:
    """The command line of one probe; the Go and Node ones are built or installed unless given."""
    header_values = ["=".join(header) for header in headers]
    if language == "python":
        return [sys.executable, str(PYTHON_PROBE), "--target", target, "--interval-ms", f"{interval_ms:g}",
                *[a for v in header_values for a in ("--header", v)]]
    if language == "go":
        return [str(go_probe or build_go_probe()), "-target", target, "-interval", f"{interval_ms:g}ms",
                *[a for v in header_values for a in ("-header", v)]]
    if language == "node":
        return ["node", str(node_probe or install_node_probe()), "--target", target, "--interval-ms",
                f"{interval_ms:g}", *[a for v in header_values for a in ("--header", v)]]
    raise ValueError(f"no probe for {language!r}")


def parse_line(line: str) -> tuple[float, str] | None:
    """(t, backend) or (t, "error: CODE: details") of one output line; None for other lines."""
    if not line.startswith("{"):
        return None
    entry = json.loads(line)
    return entry["t"], entry.get("backend") or f"error: {entry['error']}"


def calls(proc, since: float = 0.0) -> list[tuple[float, str]]:
    """Every call a probe (a support.procs.Proc) has printed that ended at or after `since`."""
    return [call for line in proc.log_lines() if (call := parse_line(line)) and call[0] >= since]


class ProbeOutput:
    """A probe's output file read as it grows: `read()` returns the calls printed since the last
    read (complete lines only) and keeps them all in `calls`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.calls: list[tuple[float, str]] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[tuple[float, str]]:
        with open(self.path, "rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        new = [call for line in lines if (call := parse_line(line.decode(errors="replace")))]
        self.calls += new
        return new

    def since(self, t: float) -> list[tuple[float, str]]:
        """The calls read so far that ended at or after `t` (a probe prints them in order)."""
        return self.calls[bisect.bisect_left(self.calls, t, key=lambda call: call[0]):]
