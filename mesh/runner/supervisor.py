"""The supervisor: starts the topology wave by wave, restarts crashed processes with
exponential backoff, and on SIGTERM stops everything in reverse order, by PID.

Its state (PIDs, restarts, last exits, chaos overrides) is written to `<run dir>/state.json`
after every change, for `make status`.

Chaos overrides (`mesh/runner/chaos.py`): every tick it looks at `<run dir>/overrides.json`; an
instance whose overrides changed is stopped (SIGTERM, SIGKILL after STOP_TIMEOUT) and started
again at once with them in its environment. That restart is not counted in `restarts` (crashes
only) and has no backoff.

Hooks (`on_ready`, by process name) run once after every start of that process, as soon as it is
ready, and again each tick until they succeed; the process counts as ready only then. The runner
uses one to create Consul's ACL tokens in every new (empty) `consul agent -dev`.
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
from collections.abc import Callable, Mapping
from typing import Any

from mesh.runner import chaos, probes, topology
from mesh.runner.topology import Process


def read_state(run_dir: pathlib.Path) -> dict[str, Any]:
    """The state a supervisor last saved in `run_dir` (state.json: see Supervisor._save), or an
    empty one ({"processes": []}) when there is none or it cannot be read."""
    try:
        state: dict[str, Any] = json.loads((run_dir / "state.json").read_text())
        return state
    except (OSError, ValueError):
        return {"processes": []}

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
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    last_exit: int | None = None
    next_start: float = 0.0
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)  # chaos env it runs with
    pending: dict[str, str] | None = None  # overrides it is being restarted for
    kill_at: float = 0.0  # when a stop for new overrides gives up waiting and kills
    hooked: bool = False  # its on_ready hook has succeeded since it last started


class Supervisor:
    def __init__(self, processes: list[Process], run_dir: pathlib.Path, consul_http: str, consul_token: str = "",
                 on_ready: Mapping[str, Callable[[], None]] | None = None) -> None:
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.consul_http = consul_http
        self.consul_token = consul_token
        self.on_ready = dict(on_ready or {})
        self._hook_error = ""
        self.children = [Child(p) for p in processes]
        self.stopping = threading.Event()
        self.overrides_file = run_dir / chaos.FILE
        self.overrides_file.unlink(missing_ok=True)  # a new mesh starts without overrides
        self._overrides_seen: tuple[int, int] | None = None
        self._overrides_error = ""

    # -- processes ---------------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        env = {**os.environ, **child.spec.env, **child.overrides}
        with open(self.logs / f"{child.spec.name}.log", "ab") as log_file:  # the child has its own copy
            child.popen = subprocess.Popen(
                child.spec.command, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=pathlib.Path(__file__).resolve().parents[2],
            )
        child.started_at = time.monotonic()
        child.hooked = child.spec.name not in self.on_ready
        log.info("started %s pid %d%s", child.spec.name, child.popen.pid,
                 f" with {chaos.describe(child.overrides)}" if child.overrides else "")
        self._save()

    def _ready(self, spec: Process, pid: int | None = None) -> bool:
        kind, target = spec.ready
        if kind == "file":
            return probes.pid_file_ok(target, pid)
        if kind == "http":
            return probes.http_ok(target)
        if kind == "grpc":
            return probes.grpc_serving(target)
        return probes.consul_checks(self.consul_http, self.consul_token).get(target) == "passing"

    def _run_hooks(self) -> None:
        for child in self.children:
            if child.hooked or child.popen is None or not self._ready(child.spec, child.popen.pid):
                continue
            try:
                self.on_ready[child.spec.name]()
            except Exception as error:  # noqa: BLE001 - retried next tick; said once
                if str(error) != self._hook_error:
                    log.warning("%s is up, its setup not yet done (retrying): %s", child.spec.name, error)
                self._hook_error = str(error)
                continue
            child.hooked = True
            self._hook_error = ""
            log.info("%s set up", child.spec.name)

    def _reap(self) -> None:
        """Notice exits and schedule restarts with backoff."""
        now = time.monotonic()
        for child in self.children:
            if child.popen is None or child.popen.poll() is None:
                continue
            child.last_exit = child.popen.returncode
            if child.pending is not None:  # stopped for new overrides: start again now
                log.info("%s stopped (exit %s); starting it with %s", child.spec.name, child.last_exit,
                         chaos.describe(child.pending) if child.pending else "no overrides")
                child.overrides, child.pending, child.kill_at = child.pending, None, 0.0
                self._spawn(child)
                continue
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

    # -- chaos overrides -----------------------------------------------------------------------------
    def _check_overrides(self) -> None:
        """Restart every instance whose overrides in the file differ from what it runs with."""
        try:
            stat = self.overrides_file.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._overrides_seen:
            self._overrides_seen = seen
            try:
                table = chaos.read(self.run_dir)
            except (chaos.Rejected, OSError) as error:
                if str(error) != self._overrides_error:
                    log.error("overrides ignored, instances keep theirs: %s", error)
                self._overrides_error = str(error)
                table = None
            if table is not None:
                self._overrides_error = ""
                for child in self.children:
                    if child.spec.service:  # mesh instances only: consul, jaeger, the control plane never
                        self._want(child, table.get(child.spec.name, {}))
        now = time.monotonic()
        for child in self.children:
            if child.pending is not None and child.popen is not None and child.kill_at and now >= child.kill_at:
                log.warning("%s did not stop in %.0f s; killing pid %d", child.spec.name, STOP_TIMEOUT, child.popen.pid)
                child.popen.kill()
                child.kill_at = 0.0

    def _want(self, child: Child, overrides: dict[str, str]) -> None:
        target = child.overrides if child.pending is None else child.pending
        if overrides == target:
            return
        if child.popen is None:  # down (waiting for a restart): it starts with them
            child.overrides, child.pending = overrides, None
            self._save()
            return
        log.info("restarting %s for overrides: %s -> %s", child.spec.name, chaos.describe(child.overrides),
                 chaos.describe(overrides))
        if child.pending is None:
            child.popen.send_signal(signal.SIGTERM)
            child.kill_at = time.monotonic() + STOP_TIMEOUT
        child.pending = overrides
        self._save()

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
                self._check_overrides()
                self._reap()
                self._restart_due()
                self._run_hooks()
                if all(c.popen is not None and c.hooked and self._ready(c.spec, c.popen.pid) for c in members):
                    break
                time.sleep(TICK)
            log.info("wave %d started", wave)
        while not self.stopping.wait(TICK):
            self._check_overrides()
            self._reap()
            self._restart_due()
            self._run_hooks()
        self.stop_all()

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.next_start = 0.0
            child.pending = None
        # Mesh instances first (they deregister and flush spans), then the infrastructure.
        for wave in sorted({c.spec.wave for c in self.children}, reverse=True):
            members = [(c, c.popen) for c in self.children if c.spec.wave == wave and c.popen is not None]
            for _, popen in members:
                popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for child, popen in members:
                try:
                    popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s; killing pid %d", child.spec.name, STOP_TIMEOUT, popen.pid)
                    popen.kill()
                    popen.wait()
                child.last_exit = popen.returncode
                child.popen = None
        self._save(stopped=True)

    def _save(self, stopped: bool = False) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "stopped": stopped,
            "control_plane": topology.control_plane_from_env(),  # what meshctl asks for xDS status
            # the folder the control plane watches (`python -m mesh.runner scenario` copies into it)
            "istio_dir": next((c.spec.env["MESH_ISTIO_DIR"] for c in self.children if "MESH_ISTIO_DIR" in c.spec.env),
                              None),
            "processes": [
                {
                    "name": c.spec.name, "service": c.spec.service, "language": c.spec.language,
                    "version": c.spec.version, "host": c.spec.host, "port": c.spec.port, "admin_port": c.spec.admin_port,
                    "pid": c.popen.pid if c.popen else None, "restarts": c.restarts, "last_exit": c.last_exit,
                    "ready": list(c.spec.ready), "overrides": c.overrides, "pending_overrides": c.pending,
                }
                for c in self.children
            ],
        }
        temp = self.run_dir / "state.json.tmp"
        temp.write_text(json.dumps(state, indent=2))
        temp.replace(self.run_dir / "state.json")
