"""`python -m mesh.runner up|down|status|logs|chaos|scenario` (what the Makefile's targets call)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from mesh.auth.tokens import SigningKey
from mesh.runner import chaos, compose, consul_acl, kube, probes, scenarios, topology
from mesh.runner.supervisor import Supervisor

UP_TIMEOUT = 120.0
DOWN_TIMEOUT = 30.0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _state(run_dir: pathlib.Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((run_dir / "state.json").read_text())
        return state
    except (OSError, ValueError):
        return None


def _running(run_dir: pathlib.Path) -> dict[str, Any] | None:
    state = _state(run_dir)
    return state if state and not state["stopped"] and _alive(state["supervisor_pid"]) else None


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def ports_in_use(run_dir: pathlib.Path, offset: int) -> list[int]:
    """The mesh's ports (at this offset) that something on 127.0.0.1 holds: a listener, or a
    connection whose ephemeral port happens to be one of them."""
    return [port for port in _ports(topology.build(run_dir, offset), offset) if _port_taken(port)]


def _ports(processes: list[topology.Process], offset: int) -> list[int]:
    ports = {p.port for p in processes} | {p.admin_port for p in processes if p.admin_port}
    ports |= {base + offset for base in topology.BASE_PORTS.values()}
    return sorted(port for port in ports if port)


def _health(process: dict[str, Any], spec: topology.Process, checks: dict[str, str]) -> str:
    kind, target = spec.ready
    if not process.get("pid"):
        return "down"
    if kind == "consul":
        return checks.get(target, "unregistered")
    if kind == "file":  # a file the process writes its pid into once ready (mesh/runner/certs.py)
        return "passing" if probes.pid_file_ok(target, process["pid"]) else "starting"
    ok = probes.http_ok(target) if kind == "http" else probes.grpc_serving(target)
    return "passing" if ok else "starting"


def _table(run_dir: pathlib.Path, offset: int) -> tuple[str, bool]:
    state = _state(run_dir) or {"processes": []}
    specs = {p.name: p for p in topology.build(run_dir, offset)}
    checks = probes.consul_checks(f"127.0.0.1:{topology.Ports(offset).consul_http}",
                                  consul_acl.read_token(run_dir, consul_acl.READ))
    # HEALTH stays last (scripts and tests read it there); OVERRIDES is one word
    rows = [("INSTANCE", "SERVICE", "LANGUAGE", "VERSION", "ADDRESS", "ADMIN", "PID", "OVERRIDES", "RESTARTS", "HEALTH")]
    healthy = True
    for process in state["processes"]:
        spec = specs.get(process["name"])
        if spec is None:
            continue
        health = _health(process, spec, checks)
        healthy &= health == "passing"
        rows.append((
            process["name"], process["service"] or "-", process["language"] or "-", process["version"] or "-",
            f"{spec.host}:{process['port']}", str(process["admin_port"] or "-"), str(process["pid"] or "-"),
            _overrides(process), str(process["restarts"]), health,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
    return text, healthy and len(rows) > 1


def _overrides(process: dict[str, Any]) -> str:
    """The chaos overrides an instance runs with (`mesh/runner/chaos.py`), or `restarting:` the ones
    it is being restarted for: `fail=100%,delay=500ms`, `-` for none."""
    pending = process.get("pending_overrides")
    if pending is not None:
        return f"restarting:{chaos.describe(pending)}"
    return chaos.describe(process.get("overrides"))


def _addresses(run_dir: pathlib.Path, offset: int) -> str:
    return "\n".join(f"  {name:<26} {url}" for name, url in topology.addresses(offset, run_dir).items())


def up(run_dir: pathlib.Path, offset: int) -> int:
    started = time.monotonic()
    if _running(run_dir):
        print("the mesh is already up")
        return status(run_dir, offset)
    processes = topology.build(run_dir, offset)
    taken = ports_in_use(run_dir, offset)
    if taken:
        print(f"cannot start: ports already in use on 127.0.0.1: {', '.join(map(str, taken))}", file=sys.stderr)
        print("(another mesh? `make down`, or set MESH_PORT_OFFSET)", file=sys.stderr)
        return 1
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "logs" / "supervisor.log", "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "mesh.runner", "supervise"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "MESH_RUN_DIR": str(run_dir), "MESH_PORT_OFFSET": str(offset)},
        )
    print(f"starting {len(processes)} processes (logs in {run_dir / 'logs'})")
    ready: set[str] = set()
    consul_http = f"127.0.0.1:{topology.Ports(offset).consul_http}"
    deadline = started + UP_TIMEOUT
    while time.monotonic() < deadline:
        checks = probes.consul_checks(consul_http, consul_acl.read_token(run_dir, consul_acl.READ))
        state = _state(run_dir) or {"processes": []}
        pids = {p["name"]: p["pid"] for p in state["processes"]}
        for spec in processes:
            if spec.name in ready or not pids.get(spec.name):
                continue
            if _health({"pid": pids[spec.name]}, spec, checks) == "passing":
                ready.add(spec.name)
                print(f"  ready  {spec.name:<14} {time.monotonic() - started:5.1f} s", flush=True)
        if len(ready) == len(processes):
            break
        time.sleep(0.2)
    else:
        missing = [p.name for p in processes if p.name not in ready]
        print(f"\nnot healthy after {UP_TIMEOUT:.0f} s: {', '.join(missing)}", file=sys.stderr)
        for name in missing:
            print(f"\n--- last lines of {name}.log ---", file=sys.stderr)
            print(_tail(run_dir / "logs" / f"{name}.log", 15), file=sys.stderr)
        down(run_dir, offset)
        return 1
    table, _ = _table(run_dir, offset)
    print(f"\nthe mesh is up in {time.monotonic() - started:.1f} s\n\n{table}\n\n{_addresses(run_dir, offset)}")
    return 0


def down(run_dir: pathlib.Path, offset: int) -> int:
    state = _state(run_dir)
    if not state:
        print("nothing to stop")
        return 0
    supervisor = state["supervisor_pid"]
    if _alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT
        while _alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
    state = _state(run_dir) or state
    # Anything still alive (supervisor killed hard, or stuck) is stopped by the PID we recorded.
    leftovers = [p["pid"] for p in state["processes"] if _alive(p["pid"])]
    if _alive(supervisor):
        leftovers.append(supervisor)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    busy = ports_in_use(run_dir, offset)
    (run_dir / "state.json").unlink(missing_ok=True)
    print(f"stopped {len(state['processes'])} processes" + (f" ({len(leftovers)} killed)" if leftovers else ""))
    if busy:
        print(f"warning: ports still in use: {', '.join(map(str, busy))}", file=sys.stderr)
        return 1
    return 0


def status(run_dir: pathlib.Path, offset: int) -> int:
    if not _running(run_dir):
        print("the mesh is down (make up starts it)")
        return 1
    table, healthy = _table(run_dir, offset)
    print(f"{table}\n\n{_addresses(run_dir, offset)}")
    errors, warnings = probes.control_plane_problems(f"127.0.0.1:{topology.Ports(offset).xds}")
    if errors or warnings:
        print(f"\ncontrol plane (Istio resources in {topology.istio_dir_from_env()}):")
        print("\n".join(f"  {line}" for line in errors + warnings))
    return 0 if healthy and not errors else 3


def _tail(path: pathlib.Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def logs(run_dir: pathlib.Path, offset: int, service: str | None, lines: int, follow: bool) -> int:
    names = [p.name for p in topology.build(run_dir, offset) if not service or service in (p.name, p.service)]
    if not names:
        print(f"no instance or service named {service!r}", file=sys.stderr)
        return 2
    paths = [run_dir / "logs" / f"{name}.log" for name in names]
    if follow:
        return subprocess.call(["tail", "-n", str(lines), "-F", *map(str, paths)])
    for name, path in zip(names, paths, strict=True):
        print(f"==> {name} <==\n{_tail(path, lines)}\n")
    return 0


def chaos_command(run_dir: pathlib.Path, offset: int, target: str | None, env: dict[str, str], off: bool) -> int:
    state = _running(run_dir)
    if not state:
        print("the mesh is down (make up starts it)", file=sys.stderr)
        return 1
    return chaos.apply(run_dir, offset, state, target, env, off)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mesh.runner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="start the whole mesh and wait until every instance is healthy")
    commands.add_parser("down", help="stop every process the mesh started")
    commands.add_parser("status", help="every instance, its health, restarts and chaos overrides")
    logs_ = commands.add_parser("logs", help="recent logs")
    logs_.add_argument("--service", help="one service or instance")
    logs_.add_argument("--lines", type=int, default=40)
    logs_.add_argument("--follow", action="store_true")
    commands.add_parser("supervise", help="(started by up) run the processes")
    chaos_ = commands.add_parser(
        "chaos", help="restart an instance (or every instance of a service) with injected failures or delay",
        description="Restart TARGET (an instance, or every instance of a service) with injected failures or "
                    "delay (docs/runtime-contract.md, 'Injected failures'); the flags replace what it had. "
                    "--off takes them off (without TARGET: from every instance). make status shows them.")
    chaos_.add_argument("target", nargs="?", metavar="TARGET", help="instance (inventory-2) or service (inventory)")
    for name, (flag, low, high, _) in chaos.VARIABLES.items():
        chaos_.add_argument(flag, type=int, metavar="N", dest=name, help=f"{name}, {low} to {high}")
    chaos_.add_argument("--off", action="store_true", help="no overrides: the instance runs as configured")
    scenario = commands.add_parser("scenario", help="apply a traffic scenario of istio/scenarios/ and show its effect",
                                   description=scenarios.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    scenario.add_argument("name", nargs="?", help="a folder of istio/scenarios/ (none: list them)")
    what = scenario.add_mutually_exclusive_group()
    what.add_argument("--apply-only", action="store_true", help="apply it, drive no traffic")
    what.add_argument("--traffic-only", action="store_true", help="it is applied: drive traffic and count again")
    what.add_argument("--off", action="store_true", help="take every scenario off: the defaults in istio/ again")
    compose_ = commands.add_parser("compose", help="docker-compose.yml from the topology (print, --write, --check)",
                                   description=compose.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compose_.add_argument("--write", action="store_true", help="write docker-compose.yml")
    compose_.add_argument("--check", action="store_true", help="exit 1 if docker-compose.yml differs from the topology")
    setup = commands.add_parser("compose-setup", help="(run inside the compose stack) write its run folder, "
                                                      "or create its Consul tokens")
    setup.add_argument("step", choices=("config", "acl"))
    commands.add_parser("images", help="every image and its Dockerfile, a line each (tools/docker/build-images reads it)")
    kube_ = commands.add_parser("kube", help="the kustomize base in kubernetes/base from the topology "
                                             "(print, --write, --check)",
                                description=kube.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kube_.add_argument("--write", action="store_true", help="write the base and istio/Kustomization")
    kube_.add_argument("--check", action="store_true", help="exit 1 if they differ from the topology")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Only up (and the supervisor it starts) writes into the run folder; status, logs and down read.
    run_dir, offset = topology.run_dir_from_env(), topology.offset_from_env()
    if args.command == "supervise":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        placement = topology.Placement.for_control_plane(run_dir, offset)
        topology.write_bootstraps(placement)
        if topology.control_plane_from_env() == "istiod":  # the registry and Istio files istiod reads
            topology.write_registry(placement)
            topology.sync_istiod_istio_dir(placement)
        SigningKey.load_or_create(topology.auth_dir(run_dir))  # the gateway reads its JWKS
        processes = topology.build(run_dir, offset)
        consul_http = f"127.0.0.1:{topology.Ports(offset).consul_http}"
        services = [s.name for s in topology.SERVICES]
        tokens = consul_acl.prepare(run_dir, services)
        setup = {"consul": lambda: consul_acl.bootstrap(consul_http, tokens, services, topology.CONSUL_NODE)}
        Supervisor(processes, run_dir, consul_http, tokens[consul_acl.READ], on_ready=setup).run()
        return 0
    if args.command == "logs":
        return logs(run_dir, offset, args.service, args.lines, args.follow)
    if args.command == "chaos":
        env = {name: str(value) for name in chaos.VARIABLES if (value := getattr(args, name)) is not None}
        if args.off == bool(env):
            parser.error("chaos: give --fail-percent N and/or --delay-ms MS, or --off")
        return chaos_command(run_dir, offset, args.target, env, args.off)
    if args.command == "compose":
        return compose.main([*(["--write"] if args.write else []), *(["--check"] if args.check else [])])
    if args.command == "kube":
        return kube.main([*(["--write"] if args.write else []), *(["--check"] if args.check else [])])
    if args.command == "images":
        for name, dockerfile in compose.DOCKERFILES.items():
            print(name, dockerfile)
        return 0
    if args.command == "compose-setup":
        return compose.setup(args.step)
    if args.command == "scenario":
        mode = "off" if args.off else "apply" if args.apply_only else "traffic" if args.traffic_only else "demo"
        if args.name is None and mode not in ("off", "demo"):
            parser.error("scenario: name one (python -m mesh.runner scenario lists them)")
        return scenarios.main(run_dir, offset, args.name, mode, _running(run_dir))
    try:
        return {"up": up, "down": down, "status": status}[args.command](run_dir, offset)
    except KeyboardInterrupt:
        if args.command == "up":
            print("\ninterrupted: the mesh goes on starting in the background (make status, make down)")
        return 130
