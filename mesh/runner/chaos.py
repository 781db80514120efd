"""Chaos overrides: run one instance of the running mesh with injected failures or delay, and take
them off again (`python -m mesh.runner chaos`, `make chaos`).

The runtimes read two variables (docs/runtime-contract.md, "Injected failures"):
MESH_INJECT_FAILURE_PERCENT (that share of business calls is answered UNAVAILABLE) and
MESH_INJECT_DELAY_MS (every business call waits that long). Health and registration are not
affected, so the instance stays in Consul: only the mesh's clients see it fail or slow down.

How it travels: the command writes `<run dir>/overrides.json`, {instance: {VARIABLE: "value"}},
under a lock. The supervisor looks at that file every tick; when an instance's overrides differ
from the ones it runs with, it stops that one child (SIGTERM, as `down` does) and starts it again
at once with the overrides added to its environment. Such a restart is not a crash: it does not
count in RESTARTS. `make status` shows every instance's overrides; a new mesh (`make up`) starts
with none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from mesh.runner import consul_acl, probes, topology

__all__ = ["FILE", "VARIABLES", "Rejected", "apply", "describe", "read", "request", "validate", "wait_applied"]

FILE = "overrides.json"
# variable -> (flag, lowest, highest, unit for `describe`)
VARIABLES = {
    "MESH_INJECT_FAILURE_PERCENT": ("--fail-percent", 0, 100, "fail={}%"),
    "MESH_INJECT_DELAY_MS": ("--delay-ms", 0, 3_600_000, "delay={}ms"),
}
APPLY_TIMEOUT = 60.0


class Rejected(ValueError):
    """An override that is not one of VARIABLES or out of its range."""


def validate(overrides: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{instance: {VARIABLE: value}} with every value a whole number in its range; zeros dropped
    (a zero injects nothing), and instances left with nothing dropped."""
    if not isinstance(overrides, dict):
        raise Rejected("overrides must be a JSON object {instance: {VARIABLE: value}}")
    out: dict[str, dict[str, str]] = {}
    for instance, env in overrides.items():
        if not isinstance(env, dict):
            raise Rejected(f"{instance}: overrides must be an object {{VARIABLE: value}}")
        checked = {}
        for name, value in env.items():
            if name not in VARIABLES:
                raise Rejected(f"{instance}: {name} cannot be overridden (only {', '.join(VARIABLES)})")
            _, low, high, _ = VARIABLES[name]
            text = str(value).strip()
            if not text.isdigit() or not low <= int(text) <= high:
                raise Rejected(f"{instance}: {name}={value!r}: a whole number from {low} to {high}")
            if int(text):
                checked[name] = str(int(text))
        if checked:
            out[str(instance)] = dict(sorted(checked.items()))
    return out


def read(run_dir: pathlib.Path) -> dict[str, dict[str, str]]:
    """The overrides file, checked; {} when there is none. Raises Rejected (or OSError)."""
    try:
        text = (run_dir / FILE).read_text()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(text or "{}")
    except ValueError as error:
        raise Rejected(f"{run_dir / FILE}: not JSON: {error}") from None
    return validate(doc)


def describe(env: dict[str, str] | None) -> str:
    """'fail=100%,delay=500ms' (one word, for the status table), or '-' for none."""
    env = env or {}
    parts = [unit.format(env[name]) for name, (_, _, _, unit) in VARIABLES.items() if name in env]
    return ",".join(parts) or "-"


@contextlib.contextmanager
def _locked(run_dir: pathlib.Path) -> Iterator[None]:
    with open(run_dir / f"{FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def request(run_dir: pathlib.Path, instances: list[str], env: dict[str, str] | None) -> dict[str, dict[str, str]]:
    """Set the overrides of `instances` to `env` (replacing what they had; None or {}: none) and
    return the whole new table. Atomic: a reader sees the old file or the new one."""
    with _locked(run_dir):
        try:
            current = read(run_dir)
        except Rejected:
            current = {}  # a hand-broken file: this write replaces it
        for instance in instances:
            current[instance] = dict(env or {})
        table = validate(current)
        temp = run_dir / f"{FILE}.tmp"
        temp.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        os.replace(temp, run_dir / FILE)
    return table


def _processes(run_dir: pathlib.Path) -> dict[str, dict[str, Any]]:
    try:
        state = json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return {p["name"]: p for p in state.get("processes", [])}


def wait_applied(run_dir: pathlib.Path, before: dict[str, dict[str, Any]], wanted: dict[str, dict[str, str]],
                 healthy: Callable[[dict[str, Any]], bool], timeout: float = APPLY_TIMEOUT) -> dict[str, str]:
    """Wait until the supervisor runs every instance of `wanted` with its overrides: a new PID when
    they changed (`before` is the state before the request) and `healthy(process)` true. Returns
    {instance: what happened}; raises TimeoutError naming the instances still waiting."""
    started = time.monotonic()
    done: dict[str, str] = {}
    while True:
        processes = _processes(run_dir)
        for name, env in wanted.items():
            if name in done:
                continue
            process, old = processes.get(name, {}), before.get(name, {})
            changed = (old.get("overrides") or {}) != env
            if process.get("overrides", {}) != env or process.get("pending_overrides") is not None:
                continue
            if not process.get("pid") or (changed and process["pid"] == old.get("pid")):
                continue
            if not healthy(process):
                continue
            took = time.monotonic() - started
            what = f"with {describe(env)}" if env else "without overrides"
            done[name] = (f"restarted {what} (pid {process['pid']}), healthy in {took:.1f} s" if changed
                          else f"already running {what}")
        if len(done) == len(wanted):
            return done
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not restarted and healthy after {timeout:.0f} s: "
                               f"{', '.join(sorted(set(wanted) - set(done)))}")
        time.sleep(0.1)


def _ready_now(process: dict[str, Any], consul_http: str, consul_token: str = "") -> bool:
    """Is this process (a row of state.json) ready by its own probe?"""
    kind, target = process.get("ready") or ("", "")
    if kind == "consul":
        return probes.consul_checks(consul_http, consul_token).get(target) == "passing"
    if kind == "http":
        return probes.http_ok(target)
    return kind == "grpc" and probes.grpc_serving(target)


INJECTING = "injecting failures"  # the WARN every runtime logs at start when MESH_INJECT_* are set


def apply(run_dir: pathlib.Path, offset: int, state: dict[str, Any], target: str | None, env: dict[str, str], off: bool,
          timeout: float = APPLY_TIMEOUT, hint: bool = True) -> int:
    """`python -m mesh.runner chaos`: set the overrides of TARGET (an instance, or every instance of
    a service; with `off` and no TARGET, every instance), wait until the supervisor has restarted
    them and they are healthy, and say what happened. Returns the exit code."""
    instances = [p for p in state["processes"] if p["service"]]
    if target:
        chosen = [p["name"] for p in instances if target in (p["name"], p["service"])]
        if not chosen:
            names = sorted({p["name"] for p in instances} | {p["service"] for p in instances})
            print(f"no mesh instance or service named {target!r} (one of: {', '.join(names)})", file=sys.stderr)
            return 2
    elif off:
        chosen = [p["name"] for p in instances]
    else:
        print("name an instance or a service (or --off alone: every instance)", file=sys.stderr)
        return 2
    before = {p["name"]: p for p in state["processes"]}
    sizes = {name: _size(run_dir / "logs" / f"{name}.log") for name in chosen}
    try:
        table = request(run_dir, chosen, {} if off else env)
    except Rejected as error:
        print(error, file=sys.stderr)
        return 2
    wanted = {name: table.get(name, {}) for name in chosen}
    consul_http = f"127.0.0.1:{topology.Ports(offset).consul_http}"
    consul_token = consul_acl.read_token(run_dir, consul_acl.READ)
    try:
        done = wait_applied(run_dir, before, wanted, lambda process: _ready_now(process, consul_http, consul_token),
                            timeout)
    except TimeoutError as error:
        print(f"{error} (make status; make logs service=NAME)", file=sys.stderr)
        return 1
    for name in chosen:
        if off and done[name].startswith("already"):
            continue  # `chaos --off` for every instance: name only the ones it changed
        print(f"  {name:<14} {done[name]}")
        restarted = done[name].startswith("restarted")
        if restarted and wanted[name] and INJECTING not in _read_from(run_dir / "logs" / f"{name}.log", sizes[name]):
            print(f"  {'':<14} warning: it did not log {INJECTING!r}: does its runtime read MESH_INJECT_* yet?",
                  file=sys.stderr)
    if off and all(d.startswith("already") for d in done.values()):
        print("  no instance had overrides")
    if hint and any(wanted.values()):
        print("take them off: make chaos-off  (python -m mesh.runner chaos --off)")
    return 0


def _size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: pathlib.Path, offset: int) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""
