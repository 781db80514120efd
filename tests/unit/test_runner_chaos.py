"""Chaos overrides (`python -m mesh.runner chaos`): the real supervisor, running real child
processes, restarts exactly the instance asked for with the injection variables in its
environment, takes them off again, keeps them across a crash, ignores a broken file, and never
counts such a restart as a crash."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from mesh.runner import chaos
from mesh.runner.cli import _overrides
from support.poll import poll_until
from support.ports import free_ports

# A mesh instance stand-in: answers HTTP 200 "ok" (the supervisor's readiness probe) and writes the
# injection variables it was started with to env-<pid>.json.
CHILD = textwrap.dedent("""\
    import http.server, json, os, sys
    port, folder = int(sys.argv[1]), sys.argv[2]
    env = {k: v for k, v in os.environ.items() if k.startswith("MESH_INJECT_")}
    with open(os.path.join(folder, f"env-{os.getpid()}.json"), "w") as out:
        json.dump(env, out)

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Ok).serve_forever()
""")

SUPERVISE = textwrap.dedent("""\
    import json, logging, pathlib, sys
    from mesh.runner.supervisor import Supervisor
    from mesh.runner.topology import Process
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_dir = pathlib.Path(sys.argv[1])
    processes = [Process(**spec) for spec in json.loads((run_dir / "specs.json").read_text())]
    Supervisor(processes, run_dir, "127.0.0.1:1").run()
""")


def _state(run_dir: Path) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((run_dir / "state.json").read_text())["processes"]}


def _env_of(run_dir: Path, pid: int) -> dict[str, str]:
    return json.loads(poll_until(lambda: (run_dir / f"env-{pid}.json").read_text(), 10, 0.05, f"env of pid {pid}"))


@pytest.fixture
def mesh(tmp_path: Path, procs):
    """A supervisor running two instances of a service `fake` and one infrastructure process."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "supervise.py").write_text(SUPERVISE)
    specs = []
    for (name, service, wave), port in zip((("infra", "", 1), ("fake-1", "fake", 2), ("fake-2", "fake", 2)),
                                           free_ports(3), strict=True):
        specs.append({"name": name, "wave": wave, "command": [sys.executable, str(tmp_path / "child.py"), str(port),
                                                              str(run_dir)],
                      "env": {}, "ready": ["http", f"http://127.0.0.1:{port}/"], "service": service,
                      "language": "python" if service else "", "port": port})
    (run_dir / "specs.json").write_text(json.dumps(specs))
    (run_dir / chaos.FILE).write_text('{"fake-1": {"MESH_INJECT_DELAY_MS": "5"}}')  # left by an earlier mesh
    procs.start("supervisor", [sys.executable, str(tmp_path / "supervise.py"), str(run_dir)],
                env={"PYTHONPATH": os.pathsep.join(sys.path)})
    poll_until(lambda: all(p["pid"] for p in _state(run_dir).values()) and len(_state(run_dir)) == 3, 20, 0.1,
               "every child started")
    poll_until(lambda: all(chaos._ready_now(p, "127.0.0.1:1") for p in _state(run_dir).values()), 20, 0.1,
               "every child ready")
    return run_dir


def _apply(run_dir: Path, target: str | None, env: dict[str, str], off: bool = False) -> int:
    state = json.loads((run_dir / "state.json").read_text())
    return chaos.apply(run_dir, 0, state, target, env, off, timeout=30)


def test_a_new_mesh_starts_without_overrides(mesh: Path):
    assert not (mesh / chaos.FILE).exists()
    for process in _state(mesh).values():
        assert process["overrides"] == {} and _env_of(mesh, process["pid"]) == {}


def test_chaos_restarts_only_the_instance_asked_for_with_the_variables_and_off_takes_them_away(mesh: Path, capsys):
    before = _state(mesh)
    assert _apply(mesh, "fake-1", {"MESH_INJECT_FAILURE_PERCENT": "100"}) == 0
    after = _state(mesh)
    assert after["fake-1"]["pid"] != before["fake-1"]["pid"]
    assert _env_of(mesh, after["fake-1"]["pid"]) == {"MESH_INJECT_FAILURE_PERCENT": "100"}
    assert after["fake-1"]["overrides"] == {"MESH_INJECT_FAILURE_PERCENT": "100"}
    assert _overrides(after["fake-1"]) == "fail=100%"  # the OVERRIDES column of make status
    assert after["fake-1"]["restarts"] == 0  # not a crash
    assert (after["fake-2"]["pid"], after["infra"]["pid"]) == (before["fake-2"]["pid"], before["infra"]["pid"])
    assert "fake-1" in capsys.readouterr().out

    assert _apply(mesh, "fake-1", {"MESH_INJECT_FAILURE_PERCENT": "100"}) == 0  # the same again: no restart
    assert _state(mesh)["fake-1"]["pid"] == after["fake-1"]["pid"]
    assert "already running with fail=100%" in capsys.readouterr().out

    assert _apply(mesh, None, {}, off=True) == 0
    off = _state(mesh)
    assert off["fake-1"]["pid"] != after["fake-1"]["pid"] and off["fake-1"]["overrides"] == {}
    assert _env_of(mesh, off["fake-1"]["pid"]) == {}
    assert off["fake-2"]["pid"] == before["fake-2"]["pid"]  # it had none: left alone
    assert _overrides(off["fake-1"]) == "-"


def test_a_service_name_restarts_every_instance_of_it_and_flags_replace_what_it_had(mesh: Path):
    assert _apply(mesh, "fake", {"MESH_INJECT_DELAY_MS": "500", "MESH_INJECT_FAILURE_PERCENT": "20"}) == 0
    for name in ("fake-1", "fake-2"):
        assert _env_of(mesh, _state(mesh)[name]["pid"]) == {"MESH_INJECT_DELAY_MS": "500",
                                                              "MESH_INJECT_FAILURE_PERCENT": "20"}
    assert _apply(mesh, "fake-2", {"MESH_INJECT_DELAY_MS": "100"}) == 0
    assert _env_of(mesh, _state(mesh)["fake-2"]["pid"]) == {"MESH_INJECT_DELAY_MS": "100"}
    assert _overrides(_state(mesh)["fake-1"]) == "fail=20%,delay=500ms"


def test_overrides_survive_a_crash_and_the_crash_counts(mesh: Path):
    assert _apply(mesh, "fake-2", {"MESH_INJECT_DELAY_MS": "250"}) == 0
    victim = _state(mesh)["fake-2"]["pid"]
    os.kill(victim, signal.SIGKILL)
    back = poll_until(lambda: (p := _state(mesh)["fake-2"])["pid"] not in (None, victim) and p, 20, 0.1,
                      "fake-2 restarted after the crash")
    assert back["restarts"] == 1
    assert _env_of(mesh, back["pid"]) == {"MESH_INJECT_DELAY_MS": "250"}


def test_what_cannot_be_overridden_is_refused_and_changes_nothing(mesh: Path, capsys):
    before = _state(mesh)
    assert _apply(mesh, "infra", {"MESH_INJECT_FAILURE_PERCENT": "100"}) == 2  # not a mesh instance
    assert _apply(mesh, "fake-1", {"MESH_INJECT_FAILURE_PERCENT": "101"}) == 2
    assert "a whole number from 0 to 100" in capsys.readouterr().err
    with pytest.raises(chaos.Rejected, match="cannot be overridden"):
        chaos.validate({"fake-1": {"MESH_PORT": "1"}})
    # a file broken by hand is logged and ignored: nobody restarts
    (mesh / chaos.FILE).write_text("{not json")
    poll_until(lambda: "overrides ignored" in (mesh.parent / "logs" / "supervisor.log").read_text(), 10, 0.1,
               "the supervisor saying it ignores the file")
    assert {n: p["pid"] for n, p in _state(mesh).items()} == {n: p["pid"] for n, p in before.items()}
