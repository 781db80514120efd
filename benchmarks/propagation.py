"""Propagation to real xDS clients: how long an Istio edit and an instance's death take to change
what grpcio, grpc-go and grpc-js clients do. `make bench-propagation` (about 40 s).

    .venv/bin/python -m benchmarks.propagation                    # 20 edits, 5 kills
    .venv/bin/python -m benchmarks.propagation --edits 10 --kills 3 --interval-ms 2

What runs, all on 127.0.0.1 (the pieces of tests/xds/test_xds_istio.py, from tests/support): a real
Consul (`consul agent -dev`), the real control plane (`python -m mesh.xds`, MESH_ISTIO_DIR a
temporary folder polled every 200 ms), two catalog backends `v1` and `v2` (each its own process,
registered in Consul with Meta version v1 / v2 and the runtime's gRPC health check: 1 s interval,
1 s timeout), a DestinationRule with subsets v1 and v2, and one probe client per language
(tests/xds/probes: Python grpcio, Go grpc-go, Node grpc-js + grpc-js-xds) calling
`xds:///catalog:7000` every `--interval-ms` (1 ms) and printing, per call, when it ended and
which backend answered. All three probes run at once and are measured on the same events.

Parts:
- `edit`: `--edits` atomic replaces (write a temporary file, rename it over, as an editor saves)
  of the VirtualService, flipping 100% v1 <-> 100% v2, each after a random pause of 0-250 ms (so
  the writes fall at every phase of the control plane's 200 ms poll). Clock, per language:
  `time.time()` just before the rename -> the end of that client's first call answered by the
  new subset. Also reported, from the write to the next write: failed calls, and calls answered
  by the old subset after that first call; and the control plane's own "resources rebuilt" log
  time (write -> rebuilt).
- `kill`: `--kills` times: a third v1 instance (its own process, same gRPC check) starts, is
  registered, and serves calls of every client (the VirtualService routes 100% to v1: the clients
  alternate between it and `v1`); after a random pause of 0-1 s (every phase of Consul's 1 s
  check interval) it gets SIGKILL. Clocks, all from `time.time()` just before the kill:
  - the killed process is reaped (its sockets, and so its clients' connections, are closed by
    then; the clients see them break some time before);
  - Consul: its check of the instance reads critical (Consul's health API, polled every ~10 ms;
    timed when the answer that shows it arrives, as are the ACKs below);
  - the control plane logs "resources rebuilt";
  - per client: it has ACKed load assignments that no longer hold the instance (the control
    plane's CSDS, polled every ~10 ms): from then on it cannot pick the instance;
  - per client, "last call to the dead instance": the end of its last call that the instance
    answered or that failed (with `v1` alive, a failed call is one the dead instance broke; its
    message is kept in the JSON); negative when the last call it answered ended before the kill
    and no call failed;
  - per client, "last reconnection attempt": the time of the last TCP connection it opens to the
    dead instance's address. A socket bound to that port beside the instance's (grpcio sets
    SO_REUSEPORT) listens from right after the kill (~0.1 ms, `listener_after_s`), accepts, finds
    which process connected (/proc), and closes: an accepted-then-closed connection stands for a
    refused one. Consul's own health-check connections are listed apart.
  A repetition is watched until every client has ACKed the removal, then for 2 s more and at
  least 3.5 s after the kill: grpc-js tries a removed address once more when the reconnect
  backoff pending at its removal ends (1 s, then 1.6 s, +-20%); an 8 s watch saw nothing later.
  Then the dead instance is deregistered (Consul itself would remove it only after a minute).
  Probes note a call's end when they get to it: on a busy machine a few ms late, so a call the
  instance answered can be noted after the kill.

Results: a table on stdout (ms) and `benchmarks/results/propagation.json` (every sample and
each measurement's p50/p99/max/n in seconds; with 20 samples p99 is the largest). Every process it
starts it stops by PID.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# Every process started here (the control plane, the probes, the backends) imports this tree's code.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), str(ROOT / "gen" / "python"), os.environ.get("PYTHONPATH", "")) if p)

from benchmarks.stats import summary  # noqa: E402
from support.backends import start_catalog_backend_process  # noqa: E402
from support.consul import ConsulAgent  # noqa: E402
from support.istio import DESTINATION_RULE, default_route, virtual_service, write_atomically  # noqa: E402
from support.poll import poll_until  # noqa: E402
from support.procs import Processes  # noqa: E402
from support.xds import ControlPlane, start_control_plane, write_bootstrap  # noqa: E402
from support.xds_probes import LANGUAGES, ProbeOutput, build_go_probe, install_node_probe, probe_command  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "propagation.json"
TARGET = "xds:///catalog:7000"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SETTLED = 20  # calls on the new subset after the first one before the next edit
SERVED = 20  # calls a new instance must have answered, per client, before it is killed
QUIET = 2.0  # seconds a kill is watched after the last client ACKed the removal ...
WATCH = 3.5  # ... and at least this long after the kill (see "A repetition is watched" above)
POLL = 0.01
EDIT_TIMEOUT = 10.0
KILL_TIMEOUT = 15.0


# ---- what the clients, the control plane and Consul say ----

class Probes:
    def __init__(self, procs: Processes, work: Path, cp: ControlPlane, interval_ms: float) -> None:
        go, node = build_go_probe(), install_node_probe()
        self.procs, self.outputs = {}, {}
        for language in LANGUAGES:
            bootstrap = write_bootstrap(work / f"bench-{language}.json", cp.address, instance_id=f"bench-{language}",
                                        service="orders")
            command = probe_command(language, TARGET, interval_ms, go_probe=go, node_probe=node)
            self.procs[language] = procs.start(f"probe-{language}", command,
                                               env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
            self.outputs[language] = ProbeOutput(self.procs[language].log_path)

    def read(self) -> None:
        for language, output in self.outputs.items():
            assert self.procs[language].alive(), f"the {language} probe exited:\n{self.procs[language].tail()}"
            output.read()

    def wait(self, condition, what: str, timeout: float) -> None:
        """Read until condition(calls of a language since nothing) holds for every language."""
        deadline = time.monotonic() + timeout
        while True:
            self.read()
            missing = [language for language, output in self.outputs.items() if not condition(output)]
            if not missing:
                return
            assert time.monotonic() < deadline, f"{what}: not {', '.join(missing)} after {timeout:.0f} s"
            time.sleep(POLL)


def rebuilt_times(cp: ControlPlane) -> list[float]:
    """When the control plane logged each "resources rebuilt" (its log's ms timestamps)."""
    return [datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            for e in cp.logs() if e["message"].startswith("resources rebuilt")]


def first_after(times: list[float], since: float) -> float | None:
    return next((t - since for t in times if t >= since), None)


def holds_port(cp: ControlPlane, port: int) -> dict[str, bool | None]:
    """Per probe language: does any load assignment it holds list `port` (None: one is not ACKed)."""
    out: dict[str, bool | None] = {}
    for config in cp.client_status(with_contents=True).config:
        instance = config.node.id.split("~")[2].split(".")[0]
        if not instance.startswith("bench-"):
            continue
        held = False
        for generic in config.generic_xds_configs:
            if generic.type_url != EDS:
                continue
            if generic.client_status != dump_pb2.ACKED:
                held = None
                break
            assignment = endpoint_pb2.ClusterLoadAssignment()
            generic.xds_config.Unpack(assignment)
            if any(lb.endpoint.address.socket_address.port_value == port
                   for locality in assignment.endpoints for lb in locality.lb_endpoints):
                held = True
        out[instance.removeprefix("bench-")] = held
    return out


def check_status(agent: ConsulAgent, instance_id: str) -> str | None:
    for check in agent.client.health.checks("catalog")[1]:
        if check["ServiceID"] == instance_id:
            return check["Status"]
    return None


class Tombstone:
    """Listens on a dead instance's port; records (time, who) for every connection opened to it
    (`who` found by the socket's owner in /proc among `pids`), then closes that connection.

    `Tombstone(port, pids)` binds the port while the instance still listens on it (grpcio servers
    set SO_REUSEPORT; so does this socket) without listening; `open()` right after the kill starts
    listening, so that almost no connection attempt falls between the two."""

    def __init__(self, port: int, pids: dict[int, str]) -> None:
        self.port, self.pids = port, pids
        self.attempts: list[tuple[float, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def open(self) -> None:
        self.sock.listen(64)
        self.listening = time.time()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, (_, peer_port) = self.sock.accept()
            except TimeoutError:
                continue
            at = time.time()
            self.attempts.append((at, self._owner(peer_port) or "unknown"))
            conn.close()

    def _owner(self, peer_port: int) -> str | None:
        inode = None
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):  # grpcio dials 127.0.0.1 from an IPv6 socket
            with open(path) as table:
                next(table)
                for line in table:
                    fields = line.split()
                    if (int(fields[1].rsplit(":", 1)[1], 16) == peer_port
                            and int(fields[2].rsplit(":", 1)[1], 16) == self.port):
                        inode = fields[9]
        if inode is None:
            return None
        if inode == "0":
            return "closed"
        for pid, language in self.pids.items():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return language
                except OSError:
                    continue
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


# ---- the parts ----

def edit_part(args, probes: Probes, cp: ControlPlane, vs_file: Path, rng: random.Random) -> dict:
    samples = []
    current = "v1"

    def count_until(sample: dict, until: float) -> None:
        """Failed calls from the write, and calls on the old subset after the first on the new,
        up to `until` (the next write)."""
        probes.read()
        for language, r in sample["per_language"].items():
            window = [(t, b) for t, b in probes.outputs[language].since(sample["written"]) if t < until]
            first_new = r["latency_s"] is not None and sample["written"] + r["latency_s"]
            r["failed_calls"] = sum(b.startswith("error") for _, b in window)
            r["errors"] = sorted({b for _, b in window if b.startswith("error")})[:3]
            r["old_after_new"] = sum(b == sample["from"] for t, b in window if first_new and t > first_new)

    for k in range(args.edits):
        new = "v2" if current == "v1" else "v1"
        time.sleep(rng.uniform(0, 0.25))
        if samples:
            count_until(samples[-1], time.time())
        written = write_atomically(vs_file, virtual_service(default_route(new)))
        sample = {"edit": k, "from": current, "to": new, "written": written, "per_language": {}}
        deadline = time.monotonic() + EDIT_TIMEOUT
        pending = set(LANGUAGES)
        while pending and time.monotonic() < deadline:
            time.sleep(POLL)
            probes.read()
            for language in list(pending):
                after = probes.outputs[language].since(written)
                first = next((i for i, (_, backend) in enumerate(after) if backend == new), None)
                if first is not None and len(after) - first > SETTLED:
                    sample["per_language"][language] = {"latency_s": after[first][0] - written}
                    pending.discard(language)
        for language in pending:
            sample["per_language"][language] = {"latency_s": None, "missed": True}
        sample["rebuilt_s"] = first_after(rebuilt_times(cp), written)
        samples.append(sample)
        print(f"edit {k + 1:2d} -> {new}: " + ", ".join(
            f"{language} {fmt_ms(sample['per_language'][language]['latency_s'])}" for language in LANGUAGES)
            + f" ms (rebuilt {fmt_ms(sample['rebuilt_s'])} ms)", flush=True)
        current = new
    count_until(samples[-1], time.time())
    if current != "v1":  # the kill part routes to v1
        written = write_atomically(vs_file, virtual_service(default_route("v1")))
        probes.wait(lambda o: [b for _, b in o.since(written)[-SETTLED:]] == ["v1"] * SETTLED, "back on v1", 30)
    per_language = {}
    for language in LANGUAGES:
        rows = [s["per_language"][language] for s in samples]
        latencies = [r["latency_s"] for r in rows if r["latency_s"] is not None]
        per_language[language] = {
            "latency_s": summary(latencies) if latencies else None, "missed": len(rows) - len(latencies),
            "old_after_new": sum(r.get("old_after_new", 0) for r in rows),
            "failed_calls": sum(r.get("failed_calls", 0) for r in rows)}
    rebuilt = [s["rebuilt_s"] for s in samples if s["rebuilt_s"] is not None]
    return {"clock": "time.time() just before the atomic rename of the VirtualService file -> end of the client's "
                     "first call answered by the new subset",
            "per_language": per_language, "rebuilt_s": summary(rebuilt) if rebuilt else None, "samples": samples}


def kill_part(args, procs: Processes, probes: Probes, agent: ConsulAgent, cp: ControlPlane,
              rng: random.Random) -> dict:
    samples = []
    for rep in range(args.kills):
        name = f"v1-extra-{rep}"
        proc, port = start_catalog_backend_process(procs, name)
        registered = time.time()
        agent.register_grpc_checked("catalog", name, port, f"127.0.0.1:{port}",
                                    meta={"version": "v1", "language": "python"})
        probes.wait(lambda o: sum(b == name for _, b in o.since(registered)) >= SERVED, f"calls answered by {name}", 30)
        serving_after = time.time() - registered
        poll_until(lambda: all(holds_port(cp, port).values()), 10, POLL, f"every client to hold {name} (CSDS)")
        time.sleep(rng.uniform(0, 1.0))

        tombstone = Tombstone(port, {**{p.pid: p.name for p in procs.started}, agent.proc.pid: "consul",
                                     **{p.pid: language for language, p in probes.procs.items()}})
        killed = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        tombstone.open()
        proc.popen.wait()  # reaped: its sockets are closed by now
        exited = time.time() - killed
        critical = None
        acked: dict[str, float] = {}
        deadline = time.monotonic() + KILL_TIMEOUT
        while time.monotonic() < deadline:  # each state is timed when the answer showing it arrives
            if critical is None and check_status(agent, name) == "critical":
                critical = time.time() - killed
            held = holds_port(cp, port)
            seen = time.time()
            for language, holds in held.items():
                if language not in acked and holds is False:
                    acked[language] = seen - killed
            if len(acked) == len(LANGUAGES) and time.time() - killed > max(max(acked.values()) + QUIET, WATCH):
                break
            time.sleep(POLL)
        tombstone.close()
        ended = time.time()
        agent.deregister(name)
        probes.read()

        sample = {"rep": rep, "instance": name, "port": port, "killed": killed,
                  "registered_to_served_s": serving_after, "listener_after_s": tombstone.listening - killed,
                  "exited_after_s": exited,
                  "consul_critical_s": critical, "rebuilt_s": first_after(rebuilt_times(cp), killed),
                  "per_language": {}}
        for language in LANGUAGES:
            window = [(t, b) for t, b in probes.outputs[language].since(killed - 1.0) if t <= ended]
            answered = [t for t, b in window if b == name]
            failed = [(t, b) for t, b in window if b.startswith("error") and t >= killed]
            last = max([*answered, *(t for t, _ in failed)], default=None)
            attempts = [t for t, who in tombstone.attempts if who == language]
            sample["per_language"][language] = {
                "acked_without_it_s": acked.get(language),
                "last_call_s": None if last is None else last - killed,
                "last_answer_s": None if not answered else answered[-1] - killed,
                "answered_after_kill": sum(t >= killed for t in answered),
                "failed_calls": len(failed), "errors": sorted({b for _, b in failed})[:3],
                "connection_attempts": len(attempts),
                "last_connection_attempt_s": (attempts[-1] - killed) if attempts else None,
                "calls_after_kill": sum(t >= killed for t, _ in window)}
        sample["connections"] = [(round(t - killed, 4), who) for t, who in tombstone.attempts]
        samples.append(sample)
        print(f"kill {rep + 1}: process gone {fmt_ms(exited)} ms, consul critical {fmt_ms(critical)} ms, "
              f"rebuilt {fmt_ms(sample['rebuilt_s'])} ms; "
              + "; ".join(f"{language} acked {fmt_ms(r['acked_without_it_s'])} ms, last call {fmt_ms(r['last_call_s'])} ms"
                          f" ({r['failed_calls']} failed), {r['connection_attempts']} reconnects"
                          for language, r in sample["per_language"].items()), flush=True)

    def over(key: str, language: str | None = None):
        values = [(s["per_language"][language] if language else s)[key] for s in samples]
        present = [v for v in values if v is not None]
        return summary(present) if present else None

    per_language = {}
    for language in LANGUAGES:
        rows = [s["per_language"][language] for s in samples]
        per_language[language] = {
            "acked_without_it_s": over("acked_without_it_s", language),
            "last_call_s": over("last_call_s", language),
            "last_connection_attempt_s": over("last_connection_attempt_s", language),
            "failed_calls": sum(r["failed_calls"] for r in rows),
            "kills_with_failed_calls": sum(r["failed_calls"] > 0 for r in rows),
            "connection_attempts": sum(r["connection_attempts"] for r in rows),
            "kills_with_connection_attempts": sum(r["connection_attempts"] > 0 for r in rows),
            "answered_after_kill": sum(r["answered_after_kill"] for r in rows)}
    return {"clocks": {
                "exited_after_s": "SIGKILL -> the killed process reaped (waitpid returned; its sockets are closed)",
                "consul_critical_s": "SIGKILL -> Consul's health API shows the instance's check critical (polled ~10 ms)",
                "rebuilt_s": "SIGKILL -> the control plane logs 'resources rebuilt'",
                "acked_without_it_s": "SIGKILL -> the client has ACKed load assignments without the instance "
                                      "(control plane CSDS, polled ~10 ms)",
                "last_call_s": "SIGKILL -> end of the client's last call answered by the instance or failed "
                               "(negative: the last one it answered ended before the kill and none failed)",
                "last_connection_attempt_s": "SIGKILL -> the client's last TCP connection to the dead instance's "
                                             "port (seen by a listener there from listener_after_s after the kill)"},
            "consul_critical_s": over("consul_critical_s"), "rebuilt_s": over("rebuilt_s"),
            "listener_after_s_max": max(s["listener_after_s"] for s in samples),
            "exited_after_s": over("exited_after_s"),
            "per_language": per_language, "samples": samples}


# ---- output ----

def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else str(round(seconds * 1000))  # round(): no "-0"


def versions() -> dict[str, str]:
    go_mod = (ROOT / "tests/xds/probes/go/go.mod").read_text()
    grpc_js = ROOT / "tests/xds/probes/node/node_modules/@grpc/grpc-js/package.json"
    grpc_js_xds = ROOT / "tests/xds/probes/node/node_modules/@grpc/grpc-js-xds/package.json"
    return {"grpcio": grpc.__version__,
            "grpc-go": re.search(r"google\.golang\.org/grpc (v\S+)", go_mod).group(1),
            "grpc-js": json.loads(grpc_js.read_text())["version"],
            "grpc-js-xds": json.loads(grpc_js_xds.read_text())["version"],
            "python": platform.python_version()}


def print_table(output: dict) -> None:
    print("\n| measurement | client | p50 ms | p99 ms | max ms | n | notes |")
    print("|---|---|---|---|---|---|---|")

    def row(what: str, client: str, s: dict | None, notes: str = "") -> None:
        if s is None:
            print(f"| {what} | {client} | - | - | - | 0 | {notes} |")
        else:
            print(f"| {what} | {client} | {fmt_ms(s['p50'])} | {fmt_ms(s['p99'])} | {fmt_ms(s['max'])} | {s['n']} "
                  f"| {notes} |")

    edit = output.get("edit")
    if edit:
        for language, r in edit["per_language"].items():
            notes = (f"{r['failed_calls']} failed calls, {r['old_after_new']} calls on the old subset after the first "
                     "on the new (until the next edit)")
            if r["missed"]:
                notes += f", {r['missed']} edits not followed within {EDIT_TIMEOUT:.0f} s"
            row("file write -> first call on the new subset", language, r["latency_s"], notes)
        row("file write -> control plane rebuilt", "(control plane)", edit["rebuilt_s"])
    kill = output.get("kill")
    if kill:
        row("SIGKILL -> the killed process reaped (its sockets closed)", "(kernel)", kill["exited_after_s"])
        row("SIGKILL -> Consul check critical (seen)", "(Consul)", kill["consul_critical_s"],
            "an upper bound: timed when Consul's answer arrived")
        row("SIGKILL -> control plane rebuilt", "(control plane)", kill["rebuilt_s"])
        for language, r in kill["per_language"].items():
            row("SIGKILL -> endpoints without it ACKed", language, r["acked_without_it_s"])
        for language, r in kill["per_language"].items():
            row("SIGKILL -> last call to it (answered or failed)", language, r["last_call_s"],
                f"{r['failed_calls']} failed calls in {r['kills_with_failed_calls']} of {len(kill['samples'])} kills")
        for language, r in kill["per_language"].items():
            row("SIGKILL -> last reconnection attempt to its address", language, r["last_connection_attempt_s"],
                f"{r['connection_attempts']} attempts in {r['kills_with_connection_attempts']} of "
                f"{len(kill['samples'])} kills")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="edit,kill", help="comma-separated: edit, kill")
    parser.add_argument("--edits", type=int, default=20, help="VirtualService edits (v1 <-> v2)")
    parser.add_argument("--kills", type=int, default=5, help="instances killed, one at a time")
    parser.add_argument("--interval-ms", type=float, default=1.0, help="the probes' pause between calls")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--keep", action="store_true", help="keep the logs (printed at the end)")
    args = parser.parse_args()
    args.parts = args.parts.split(",")
    rng = random.Random(args.seed)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-propagation-"))
    procs = Processes(work / "logs")
    agent = ConsulAgent(work / "consul")
    output = {"command": "python -m benchmarks.propagation " + " ".join(sys.argv[1:]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                          "load_average_before": os.getloadavg()},
              "versions": versions() if (ROOT / "tests/xds/probes/node/node_modules").exists() else {},
              "settings": vars(args)}
    try:
        agent.start()
        for version in ("v1", "v2"):
            _, port = start_catalog_backend_process(procs, version)
            agent.register_grpc_checked("catalog", f"catalog-{version}", port, f"127.0.0.1:{port}",
                                        meta={"version": version, "language": "python"})
        poll_until(lambda: agent.passing("catalog") == ["catalog-v1", "catalog-v2"], 30, POLL, "v1 and v2 passing")
        istio_dir = work / "istio"
        istio_dir.mkdir()
        (istio_dir / "catalog-rule.yaml").write_text(DESTINATION_RULE)
        vs_file = istio_dir / "catalog-vs.yaml"
        vs_file.write_text(virtual_service(default_route("v1")))
        cp = start_control_plane(procs, agent.http_addr, env={"MESH_ISTIO_DIR": str(istio_dir)})
        probes = Probes(procs, work, cp, args.interval_ms)
        output["versions"] = versions()
        probes.wait(lambda o: [b for _, b in o.calls[-SETTLED:]] == ["v1"] * SETTLED, "every probe on v1", 60)
        print(f"set up in {time.monotonic() - started:.1f} s", flush=True)
        phases = {"setup": time.time()}
        if "edit" in args.parts:
            output["edit"] = edit_part(args, probes, cp, vs_file, rng)
            phases["edit"] = time.time()
        if "kill" in args.parts:
            output["kill"] = kill_part(args, procs, probes, agent, cp, rng)
            phases["kill"] = time.time()
        probes.read()
        output["nacks"] = sum("NACK" in e["message"] for e in cp.logs())
        output["probe_calls"] = {language: len(o.calls) for language, o in probes.outputs.items()}
        output["probe_failed_calls"] = {}  # phase -> language -> failed calls that ended in it
        begin = 0.0
        for phase, end in phases.items():
            output["probe_failed_calls"][phase] = {
                language: sum(b.startswith("error") for t, b in o.since(begin) if t < end)
                for language, o in probes.outputs.items()}
            begin = end
    except BaseException:
        print(procs.report(20), file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        agent.stop()
    output["took_s"] = time.monotonic() - started
    output["machine"]["load_average_after"] = os.getloadavg()  # 1, 5, 15 min: others' work on the cores shows here
    Path(args.out).write_text(json.dumps(output, indent=2) + "\n")
    if args.keep:
        print(f"logs kept in {work / 'logs'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print_table(output)
    print(f"\n{sum(output['probe_calls'].values()):,} calls in all; failed: " + "; ".join(
        f"{phase} " + ", ".join(f"{language} {n}" for language, n in per_language.items())
        for phase, per_language in output["probe_failed_calls"].items())
          + f"; NACKs: {output['nacks']}; {output['took_s']:.0f} s; "
          f"load average {output['machine']['load_average_before'][0]:.1f} before, "
          f"{output['machine']['load_average_after'][0]:.1f} after ({os.cpu_count()} CPUs)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
