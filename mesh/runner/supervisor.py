"""The supervisor: starts the topology wave by wave, restarts crashed processes with
exponential backoff, and on SIGTERM stops everything in reverse order, by PID.

Its state (PIDs, restarts, last exits) is written to `<run dir>/state.json` after every change,
for `make status`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import signal
import subprocess
import threading
import time

from mesh.runner import probes
from mesh.runner.topology import Process

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # seconds up after which the backoff starts again from the first step
STOP_TIMEOUT = 10.0
WAVE_TIMEOUT = 60.0
TICK = 0.1


@dataclasses.dataclass
class Child:
    spec: Process
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    last_exit: int | None = None
    next_start: float = 0.0


class Supervisor:
    def __init__(self, processes: list[Process], run_dir: pathlib.Path, consul_http: str) -> None:
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.consul_http = consul_http
        self.children = [Child(p) for p in processes]
        self.stopping = threading.Event()

    # -- processes ---------------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        log_file = open(self.logs / f"{child.spec.name}.log", "ab")
        env = {**os.environ, **child.spec.env}
        child.popen = subprocess.Popen(
            child.spec.command, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=pathlib.Path(__file__).resolve().parents[2],
        )
        log_file.close()
        child.started_at = time.monotonic()
        log.info("started %s pid %d", child.spec.name, child.popen.pid)
        self._save()

    def _ready(self, spec: Process) -> bool:
        kind, target = spec.ready
        if kind == "http":
            return probes.http_ok(target)
        if kind == "grpc":
            return probes.grpc_serving(target)
        return probes.consul_checks(self.consul_http).get(target) == "passing"

    def _reap(self) -> None:
        """Notice exits and schedule restarts with backoff."""
        now = time.monotonic()
        for child in self.children:
            if child.popen is None or child.popen.poll() is None:
                continue
            child.last_exit = child.popen.returncode
            up = now - child.started_at
            child.failures_in_a_row = 0 if up >= STABLE_AFTER else child.failures_in_a_row + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, child.failures_in_a_row - 1))
            child.next_start = now + delay
            child.popen = None
            log.warning("%s exited with %s after %.1f s; restarting in %.1f s",
                        child.spec.name, child.last_exit, up, delay)
            self._save()

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.popen is None and child.next_start and now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                self._spawn(child)

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        waves = sorted({c.spec.wave for c in self.children})
        for wave in waves:
            members = [c for c in self.children if c.spec.wave == wave]
            for child in members:
                self._spawn(child)
            deadline = time.monotonic() + WAVE_TIMEOUT
            while not self.stopping.is_set() and time.monotonic() < deadline:
                self._reap()
                self._restart_due()
                if all(c.popen is not None and self._ready(c.spec) for c in members):
                    break
                time.sleep(TICK)
            log.info("wave %d started", wave)
        while not self.stopping.wait(TICK):
            self._reap()
            self._restart_due()
        self.stop_all()

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.next_start = 0.0
        # Mesh instances first (they deregister and flush spans), then the infrastructure.
        for wave in sorted({c.spec.wave for c in self.children}, reverse=True):
            members = [c for c in self.children if c.spec.wave == wave and c.popen is not None]
            for child in members:
                child.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for child in members:
                try:
                    child.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s; killing pid %d", child.spec.name, STOP_TIMEOUT, child.popen.pid)
                    child.popen.kill()
                    child.popen.wait()
                child.last_exit = child.popen.returncode
                child.popen = None
        self._save(stopped=True)

    def _save(self, stopped: bool = False) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "stopped": stopped,
            "processes": [
                {
                    "name": c.spec.name, "service": c.spec.service, "language": c.spec.language,
                    "version": c.spec.version, "port": c.spec.port, "admin_port": c.spec.admin_port,
                    "pid": c.popen.pid if c.popen else None, "restarts": c.restarts, "last_exit": c.last_exit,
                }
                for c in self.children
            ],
        }
        temp = self.run_dir / "state.json.tmp"
        temp.write_text(json.dumps(state, indent=2))
        temp.replace(self.run_dir / "state.json")
