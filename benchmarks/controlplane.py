"""The control plane at scale: push latency, CPU and memory against a real Consul, with synthetic
ADS clients (tests/support/fleet.py) playing the nodes. `make bench-controlplane`.

    .venv/bin/python -m benchmarks.controlplane              # everything (about 10 minutes)
    .venv/bin/python -m benchmarks.controlplane --parts scale --changes 10

Parts:
- `scale`: catalogs of 1,000 (100 services x 10) and 10,000 endpoints (1,000 x 10), 100 and
  1,000 clients calling 10 services each. Per setting, `--changes` endpoint changes, one at a
  time (a new instance registered in a service, then deregistered): the latency from just before
  the Consul call to each subscribed client holding the change (p50/p99/max over every
  client x change, and over each change's last client), the control plane's CPU time per
  change (/proc/PID/stat) and its RSS.
- `stuck`: on the 10,000-endpoint catalog, clients that open a stream and never read again;
  changes to their services; RSS before, with them, and after the control plane dropped them
  (MESH_XDS_UNACKED_TIMEOUT is set short for the run).
- `table`: the issue's table, "time from the last registration to the snapshot that holds it
  all" (a client subscribed to every service's endpoints holds every endpoint) for 10x10,
  100x10 and 500x20, for the control plane of `--before` (default 2c20f51, exported with
  `git archive` into a temporary directory) and of this tree.

Instances are registered through Consul's catalog API (`/v1/catalog/register`, one service with a
passing check per call, 16 calls at a time, spread over 10 nodes), as external services are: the
agent API syncs every registration through the local agent's anti-entropy and took ~8 ms each
here (123/s for 2,000), far too slow for 10,000. The control plane watches both the same way.

Everything runs on 127.0.0.1 on free ports; every process it starts it stops by PID. Results:
`benchmarks/results/controlplane.json` (every sample's summary, one run) and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from envoy.service.status.v3 import csds_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.stats import summary  # noqa: E402
from support.consul import ConsulAgent  # noqa: E402
from support.fleet import ClientFleet, SyntheticClient  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.procs import Processes  # noqa: E402
from support.xds import ControlPlane  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "controlplane.json"
NODES = 10  # Consul nodes the instances are spread over
REGISTER_CONCURRENCY = 16
CALLS_PER_CLIENT = 10
TICK = os.sysconf("SC_CLK_TCK")


# ---- Consul, through its catalog API ----

class Catalog:
    def __init__(self, http_addr: str) -> None:
        self.base = f"http://{http_addr}/v1/catalog"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=REGISTER_CONCURRENCY))
        self.limit = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def close(self) -> None:
        await self.session.close()

    async def register(self, service: str, instance_id: str, port: int, node: int) -> None:
        body = {"Node": f"node-{node}", "Address": "127.0.0.1", "SkipNodeUpdate": True,
                "Service": {"ID": instance_id, "Service": service, "Port": port, "Address": "127.0.0.1"},
                "Check": {"CheckID": f"service:{instance_id}", "Name": "bench", "Status": "passing",
                          "ServiceID": instance_id}}
        async with self.limit, self.session.put(f"{self.base}/register", json=body) as answer:
            assert answer.status == 200, await answer.text()

    async def deregister(self, instance_id: str, node: int) -> None:
        async with self.limit, self.session.put(f"{self.base}/deregister",
                                                json={"Node": f"node-{node}", "ServiceID": instance_id}) as answer:
            assert answer.status == 200, await answer.text()

    async def register_grid(self, services: int, instances: int) -> tuple[float, float]:
        """services x instances; returns (seconds it took, time.time() the last call returned)."""
        started = time.monotonic()
        await asyncio.gather(*(self.register(service_name(s), f"{service_name(s)}-{i}", port_of(s, i),
                                             (s * instances + i) % NODES)
                               for s in range(services) for i in range(instances)))
        return time.monotonic() - started, time.time()


def service_name(s: int) -> str:
    return f"svc-{s:04d}"


def port_of(s: int, i: int) -> int:
    return 10000 + (s * 50 + i) % 50000


# ---- the control plane process ----

def start_control_plane(procs: Processes, consul_addr: str, source: Path, name: str,
                        env: dict[str, str] | None = None) -> ControlPlane:
    port = free_port()
    pythonpath = f"{source}:{ROOT / 'gen' / 'python'}"
    run_dir = procs.log_dir.parent / f"{name}-run"  # its mesh CA and the certificates it issues
    proc = procs.start(name, [sys.executable, "-m", "mesh.xds"], cwd=source, env={
        "PYTHONPATH": pythonpath, "MESH_XDS_HOST": "127.0.0.1", "MESH_XDS_PORT": str(port),
        "CONSUL_HTTP_ADDR": consul_addr, "MESH_LOG_LEVEL": "info", "MESH_RUN_DIR": str(run_dir), **(env or {})})
    cp = ControlPlane(proc, port, run_dir)
    deadline = time.monotonic() + 60
    while True:
        try:
            if cp.health() == "SERVING":
                return cp
        except Exception:  # noqa: BLE001 - not up yet
            pass
        assert proc.alive() and time.monotonic() < deadline, proc.tail()
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# ---- parts ----

def subscriptions(clients: int, services: int) -> dict[int, list[str]]:
    """Client c calls CALLS_PER_CLIENT services, spread so that every service has as many subscribers."""
    step = max(1, services // CALLS_PER_CLIENT)
    return {c: [service_name((c + k * step) % services) for k in range(CALLS_PER_CLIENT)] for c in range(clients)}


def grid_endpoints(services: int, instances: int):
    def expected(name: str) -> frozenset:
        s = int(name.rsplit("-", 1)[1])
        return frozenset(("127.0.0.1", port_of(s, i)) for i in range(instances))
    return expected


async def push_latency(catalog: Catalog, cp: ControlPlane, fleet: ClientFleet, services: int, changes: int,
                       rng: random.Random) -> dict:
    per_client, per_change = [], []
    cpu_before = cpu_seconds(cp.proc.pid)
    for k in range(changes // 2):
        s = rng.randrange(services)
        name, extra_id, extra_port = service_name(s), f"extra-{k}", 60000 + k
        node = k % NODES
        for action in ("register", "deregister"):
            subscribers = fleet.subscribers(name)
            extra = ("127.0.0.1", extra_port)
            has = (lambda eps: extra in eps) if action == "register" else (lambda eps: extra not in eps)
            since = time.time()
            if action == "register":
                await catalog.register(name, extra_id, extra_port, node)
            else:
                await catalog.deregister(extra_id, node)
            deadline = time.monotonic() + 30
            while True:
                arrivals = [fleet.arrival(c, name, has, since) for c in subscribers]
                if all(a is not None for a in arrivals):
                    break
                assert time.monotonic() < deadline, f"{action} {extra_id} of {name} not everywhere after 30 s"
                await asyncio.sleep(0.005)
            latencies = [a - since for a in arrivals]
            per_client += latencies
            per_change.append(max(latencies))
    cpu = cpu_seconds(cp.proc.pid) - cpu_before
    return {"push_latency_s": summary(per_client), "last_client_latency_s": summary(per_change),
            "cpu_s_per_change": cpu / len(per_change), "changes": len(per_change),
            "subscribers_per_service": len(fleet.subscribers(service_name(0)))}


async def scale_part(args, procs: Processes, work: Path) -> list[dict]:
    rows = []
    for services, instances in ((100, 10), (1000, 10)):
        agent = ConsulAgent(work / f"consul-{services}").start()
        catalog = Catalog(agent.http_addr)
        try:
            cp = start_control_plane(procs, agent.http_addr, ROOT, f"xds-{services}")
            took, _ = await catalog.register_grid(services, instances)
            print(f"registered {services * instances} endpoints in {took:.1f} s", flush=True)
            for clients in (100, 1000):
                fleet = ClientFleet(cp.address, subscriptions(clients, services))
                started = time.monotonic()
                await fleet.start()
                await fleet.until_synced(grid_endpoints(services, instances), timeout=300)
                synced = time.monotonic() - started
                rss = rss_mb(cp.proc.pid)
                result = await push_latency(catalog, cp, fleet, services, args.changes, random.Random(services + clients))
                await fleet.stop()
                row = {"endpoints": services * instances, "services": services, "clients": clients,
                       "register_s": took, "clients_synced_s": synced, "rss_mb": rss,
                       "rss_mb_after": rss_mb(cp.proc.pid), **result}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if services == 1000 and "stuck" in args.parts:
                rows_stuck.append(await stuck_part(args, catalog, cp, services))
            cp.proc.stop()
        finally:
            await catalog.close()
            agent.stop()
    return rows


rows_stuck: list[dict] = []


async def stuck_part(args, catalog: Catalog, cp: ControlPlane, services: int) -> dict:
    """Clients that never read; changes to their services; RSS with them and after they are dropped."""
    readers = ClientFleet(cp.address, subscriptions(100, services))
    await readers.start()
    await readers.until_synced(grid_endpoints(services, 10), timeout=120)
    baseline = rss_mb(cp.proc.pid)
    stuck_services = [service_name(s) for s in range(CALLS_PER_CLIENT)]
    stuck = [SyntheticClient(cp.address, 10000 + n, stuck_services) for n in range(args.stuck)]
    for client in stuck:  # subscribe, then never read nor ACK
        await client.ads.__aenter__()
        for type_url, names in client.names.items():
            await client.ads.send(type_url, names)
    stuck_ids = {c.ads.node.id for c in stuck}

    def all_sent() -> bool:  # every stuck node has been sent everything it asked for (and never answered)
        configs = [c for c in cp.client_status().config if c.node.id in stuck_ids]
        return len(configs) == len(stuck) and all(
            len(c.generic_xds_configs) == 4 * CALLS_PER_CLIENT and
            all(g.config_status == csds_pb2.STALE for g in c.generic_xds_configs) for c in configs)

    started = time.monotonic()
    while not all_sent():
        assert time.monotonic() - started < 60, "stuck clients not served"
        await asyncio.sleep(0.1)
    peak = baseline
    for k in range(args.stuck_changes):
        s = k % CALLS_PER_CLIENT
        await catalog.register(service_name(s), f"stuck-extra-{k}", 61000 + k, k % NODES)
        peak = max(peak, rss_mb(cp.proc.pid))
    with_stuck = rss_mb(cp.proc.pid)
    started = time.monotonic()
    while sum("unanswered" in line for line in cp.proc.log_lines()) < args.stuck:
        assert time.monotonic() - started < 120, "stuck clients not dropped"
        await asyncio.sleep(0.1)
    dropped_after = time.monotonic() - started
    for k in range(args.stuck_changes):
        await catalog.deregister(f"stuck-extra-{k}", k % NODES)
    await asyncio.sleep(1)  # let the reading clients take the deregistrations (memory is read after)
    after = rss_mb(cp.proc.pid)
    for client in stuck:
        await client.ads.__aexit__(None, None, None)
    await readers.stop()
    row = {"endpoints": services * 10, "reading_clients": 100, "stuck_clients": args.stuck,
           "changes_while_stuck": args.stuck_changes, "unacked_timeout_s": args.unacked_timeout,
           "rss_mb_before": baseline, "rss_mb_peak": peak, "rss_mb_with_stuck": with_stuck, "rss_mb_after_drop": after,
           "dropped_within_s": dropped_after}
    print(json.dumps(row), flush=True)
    return row


async def debounce_part(args, procs: Processes, work: Path) -> list[dict]:
    """What the debounce adds to a lone change, and what it saves in a burst: 1,000 endpoints, 100
    clients, with the default debounce and with it as good as off; then a burst of `--burst`
    registrations at once, counting the rebuilds it took."""
    rows = []
    services, instances = 100, 10
    for setting, env in (("default (20 ms / 250 ms)", {}),
                         ("off (0.1 ms / 0.1 ms)", {"MESH_XDS_DEBOUNCE_AFTER": "0.0001", "MESH_XDS_DEBOUNCE_MAX": "0.0001"})):
        agent = ConsulAgent(work / f"debounce-{len(rows)}").start()
        catalog = Catalog(agent.http_addr)
        try:
            cp = start_control_plane(procs, agent.http_addr, ROOT, f"xds-debounce-{len(rows)}", env=env)
            await catalog.register_grid(services, instances)
            fleet = ClientFleet(cp.address, subscriptions(100, services))
            await fleet.start()
            await fleet.until_synced(grid_endpoints(services, instances), timeout=120)
            lone = await push_latency(catalog, cp, fleet, services, args.changes, random.Random(7))
            rebuilds_before = sum("resources rebuilt" in line for line in cp.proc.log_lines())
            cpu_before = cpu_seconds(cp.proc.pid)
            since = time.time()
            await asyncio.gather(*(catalog.register(service_name(k % services), f"burst-{k}", 62000 + k, k % NODES)
                                   for k in range(args.burst)))
            burst_registered = time.time()

            def burst_done() -> bool:
                return all(("127.0.0.1", 62000 + k) in c.endpoints.get(service_name(k % services), ())
                           for k in range(args.burst) for c in fleet.subscribers(service_name(k % services)))
            while not burst_done():
                assert time.time() - since < 60, "burst not everywhere after 60 s"
                await asyncio.sleep(0.005)
            row = {"debounce": setting, "lone_change_push_s": lone["push_latency_s"],
                   "lone_change_cpu_s": lone["cpu_s_per_change"], "burst": args.burst,
                   "burst_everywhere_after_last_registration_s": time.time() - burst_registered,
                   "burst_rebuilds": sum("resources rebuilt" in line for line in cp.proc.log_lines()) - rebuilds_before,
                   "burst_cpu_s": cpu_seconds(cp.proc.pid) - cpu_before}
            rows.append(row)
            print(json.dumps(row), flush=True)
            await fleet.stop()
            cp.proc.stop()
        finally:
            await catalog.close()
            agent.stop()
    return rows


async def table_part(args, procs: Processes, work: Path, before_source: Path) -> list[dict]:
    rows = []
    for services, instances in ((10, 10), (100, 10), (500, 20)):
        for version, source in (("before", before_source), ("after", ROOT)):
            agent = ConsulAgent(work / f"table-{services}-{version}").start()
            catalog = Catalog(agent.http_addr)
            try:
                cp = start_control_plane(procs, agent.http_addr, source, f"table-{services}-{version}")
                names = [service_name(s) for s in range(services)]
                fleet = ClientFleet(cp.address, {0: names})
                await fleet.start()
                took, last = await catalog.register_grid(services, instances)
                expected = grid_endpoints(services, instances)
                client = fleet.clients[0]
                deadline = time.monotonic() + args.table_timeout
                while fleet.lagging(expected) and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                held = sum(len(client.endpoints.get(n, ())) for n in names)
                complete = None
                if not fleet.lagging(expected):  # when the last service's full set arrived
                    complete = max(next(t for t, s, eps in client.history if s == n and eps == expected(n)) for n in names)
                row = {"catalog": f"{services} x {instances}", "endpoints": services * instances, "version": version,
                       "register_s": took, "after_last_registration_s": None if complete is None else complete - last,
                       "endpoints_held": held, "waited_s": args.table_timeout,
                       "unreachable_warnings": sum("unreachable" in line for line in cp.proc.log_lines())}
                rows.append(row)
                print(json.dumps(row), flush=True)
                await fleet.stop()
                cp.proc.stop()
            finally:
                await catalog.close()
                agent.stop()
    return rows


def export_before(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", commit, "mesh"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def print_tables(output: dict) -> None:
    ms = lambda s: f"{s * 1000:.0f}"  # noqa: E731
    if output["scale"]:
        print("\n| endpoints | clients | subscribers/service | push p50 ms | p99 ms | max ms | last client p50 / p99 / max ms "
              "| CPU ms/change | RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in output["scale"]:
            p, c = r["push_latency_s"], r["last_client_latency_s"]
            print(f"| {r['endpoints']:,} | {r['clients']:,} | {r['subscribers_per_service']} | {ms(p['p50'])} | "
                  f"{ms(p['p99'])} | {ms(p['max'])} | {ms(c['p50'])} / {ms(c['p99'])} / {ms(c['max'])} | "
                  f"{r['cpu_s_per_change'] * 1000:.0f} | {r['rss_mb']:.0f} |")
    for r in output["stuck"]:
        print(f"\nstuck: {r['stuck_clients']} clients, {r['changes_while_stuck']} changes: RSS {r['rss_mb_before']:.0f} MB "
              f"before, peak {r['rss_mb_peak']:.0f}, {r['rss_mb_with_stuck']:.0f} with them, "
              f"{r['rss_mb_after_drop']:.0f} after the drop ({r['dropped_within_s']:.1f} s)")
    if output.get("debounce"):
        print("\n| debounce | lone change p50 / p99 ms | burst of N: everywhere after the last registration | rebuilds | CPU s |")
        print("|---|---|---|---|---|")
        for r in output["debounce"]:
            p = r["lone_change_push_s"]
            print(f"| {r['debounce']} | {ms(p['p50'])} / {ms(p['p99'])} | {r['burst']}: "
                  f"{ms(r['burst_everywhere_after_last_registration_s'])} ms | {r['burst_rebuilds']} | {r['burst_cpu_s']:.2f} |")
    if output["table"]:
        print("\n| catalog | before | after |\n|---|---|---|")
        by = {(r["catalog"], r["version"]): r for r in output["table"]}
        for name in dict.fromkeys(r["catalog"] for r in output["table"]):
            cells = []
            for version in ("before", "after"):
                r = by[(name, version)]
                cells.append(f"{r['after_last_registration_s']:.3f} s" if r["after_last_registration_s"] is not None
                             else f"never: {r['endpoints_held']:,} of {r['endpoints']:,} after {r['waited_s']:.0f} s")
            print(f"| {name} | {cells[0]} | {cells[1]} |")


async def main_async(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-controlplane-"))
    procs = Processes(work / "logs")
    output = {"command": "python -m benchmarks.controlplane " + " ".join(sys.argv[1:]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "settings": vars(args), "scale": [], "stuck": rows_stuck, "debounce": [], "table": []}
    try:
        os.environ["MESH_XDS_UNACKED_TIMEOUT"] = str(args.unacked_timeout)
        if "scale" in args.parts or "stuck" in args.parts:
            output["scale"] = await scale_part(args, procs, work)
        if "debounce" in args.parts:
            output["debounce"] = await debounce_part(args, procs, work)
        if "table" in args.parts:
            before = export_before(args.before, Path(tempfile.mkdtemp(prefix="bench-before-")))
            output["table"] = await table_part(args, procs, work, before)
    finally:
        procs.stop_all()
    shutil.rmtree(work, ignore_errors=True)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="scale,stuck,debounce,table",
                        help="comma-separated: scale, stuck, debounce, table")
    parser.add_argument("--burst", type=int, default=200, help="registrations at once in the debounce part")
    parser.add_argument("--changes", type=int, default=20, help="endpoint changes per setting (even)")
    parser.add_argument("--stuck", type=int, default=20, help="clients that stop reading")
    parser.add_argument("--stuck-changes", type=int, default=40, help="changes while they are stuck")
    parser.add_argument("--unacked-timeout", type=float, default=3.0, help="MESH_XDS_UNACKED_TIMEOUT for the run")
    parser.add_argument("--table-timeout", type=float, default=60.0, help="seconds the table waits for a version")
    parser.add_argument("--before", default="2c20f51", help="commit of the 'before' control plane")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    args.parts = args.parts.split(",")
    output = asyncio.run(main_async(args))
    Path(args.out).write_text(json.dumps(output, indent=2) + "\n")
    print_tables(output)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
