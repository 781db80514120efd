"""`python -m mesh.runner.certs`: the mesh CA as a process of its own, for MESH_CONTROL_PLANE=istiod.

Under our control plane the CA issues an instance's certificate when it opens its ADS stream
(mesh/xds/ca.py). Under istiod, certificates would come from the istio-agent beside each workload,
which a proxyless process here does not have; so this process issues, with the same CA in
MESH_CA_DIR, a certificate for every instance of the topology at start, writes the files where each
bootstrap's `default` file_watcher provider reads them (the provider istiod's TLS settings name),
and reissues each at half its lifetime (MESH_CERT_TTL, 1 h) for as long as it runs. Once the first
round is written it writes its pid into MESH_CERTS_DIR/.issued: what the runner polls.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from mesh.runner import topology
from mesh.runtime import logs
from mesh.xds.bootstrap import Node, NodeIdentity
from mesh.xds.ca import DEFAULT_TTL, MIN_TTL, Issuer, MeshCA

READY_FILE = ".issued"


def identities(placement: topology.Placement) -> list[NodeIdentity]:
    out = []
    for service in topology.SERVICES:
        for instance in service.instances:
            node = Node(service.name, instance.name, instance.version, placement.hosts(instance.name), topology.NAMESPACE)
            out.append(NodeIdentity(node.id, service.name, instance.name, topology.NAMESPACE, (node.host,), node.labels))
    return out


async def run(issuer: Issuer, nodes: list[NodeIdentity], ready_file: Path) -> None:
    for node in nodes:
        issuer.ensure(node)
    temp = ready_file.with_name(ready_file.name + ".tmp")
    temp.write_text(str(os.getpid()))
    temp.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rotation = asyncio.create_task(issuer.rotate_forever(lambda: nodes))
    await stop.wait()
    rotation.cancel()
    ready_file.unlink(missing_ok=True)


def main() -> int:
    logs.configure("certs", f"certs-{os.getpid()}", "INFO")
    run_dir = topology.run_dir_from_env()
    certs_dir = Path(os.environ.get("MESH_CERTS_DIR", run_dir / "certs"))
    ttl = max(float(os.environ.get("MESH_CERT_TTL", DEFAULT_TTL)), MIN_TTL)
    ca = MeshCA.load_or_create(Path(os.environ.get("MESH_CA_DIR", run_dir / "ca")))
    placement = topology.Placement.for_control_plane(run_dir, topology.offset_from_env())
    certs_dir.mkdir(parents=True, exist_ok=True)
    (certs_dir / READY_FILE).unlink(missing_ok=True)
    asyncio.run(run(Issuer(ca, certs_dir, ttl), identities(placement), certs_dir / READY_FILE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
