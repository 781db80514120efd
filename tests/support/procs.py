"""Start processes with their output in a log file; stop them by PID; show their logs on failure.

    procs = Processes(tmp_path)                    # or the `procs` fixture from tests/conftest.py
    cp = procs.start("xds", [sys.executable, "-m", "mesh.xds"], env={"MESH_XDS_PORT": "18123"})
    poll_until(lambda: "SERVING" in cp.log_text())
    assert cp.stop() == 0                          # SIGTERM, then SIGKILL after `timeout`
    procs.stop_all()                               # what the fixture does at teardown

Each process runs in its own session, so a stop never touches anything but that PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Proc", "Processes"]


class Proc:
    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None, cwd) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env or {})  # what was set on top of this process's environment
        self.log_path = log_path
        full_env = {**os.environ, **(env or {})}
        with open(log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                self.args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=full_env, cwd=cwd, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def send_signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 10.0, signum: int = signal.SIGTERM) -> int:
        """Send `signum` to this PID, wait up to `timeout`, then SIGKILL; return the exit code."""
        if self.alive():
            os.kill(self.pid, signum)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} (pid {self.pid}) still running {timeout}s after signal {signum}: SIGKILL")
                os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait()


class Processes:
    """The processes one test started, each logging to `<log_dir>/<name>.log`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[Proc] = []

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None, cwd=None) -> Proc:
        proc = Proc(name, args, self.log_dir / f"{name}.log", env, cwd)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()

    def report(self, lines: int = 40) -> str:
        """Every process's log tail, for a failing test's output."""
        parts = []
        for proc in self.started:
            state = "running" if proc.alive() else f"exit {proc.popen.returncode}"
            parts.append(f"----- {proc.name} (pid {proc.pid}, {state}) {proc.log_path} -----\n{proc.tail(lines)}")
        return "\n".join(parts)
