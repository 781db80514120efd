"""A real `consul agent -dev` on 127.0.0.1, every port free, data in a temp dir, stopped by PID.

    agent = ConsulAgent(tmp_path / "consul")       # or the `consul_agent` fixture (tests/conftest.py)
    agent.start()                                  # returns once the agent leads and is in the catalog
    agent.http_addr                                # "127.0.0.1:PORT", for CONSUL_HTTP_ADDR
    agent.client.agent.service.register(...)       # py-consul, synchronous
    agent.register("catalog", "catalog-1", port, meta={"version": "v1"})   # TTL check, passing
    agent.ttl_fail("catalog-1"); agent.deregister("catalog-1")
    agent.register_grpc_checked("catalog", "catalog-2", port, f"127.0.0.1:{port}")  # as the runtime does
    agent.stop(); agent.start()                    # a restart keeps the same ports and the registrations
    agent.stop(); agent.forget(); agent.start()    # ... or comes back empty, as the runner's agent does
    agent.stop()

The binary is `$CONSUL_BIN` or `.tools/bin/consul` in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import consul

from support.poll import poll_until
from support.ports import free_ports
from support.procs import Proc

__all__ = ["CONSUL_BIN", "ConsulAgent"]

REPO = Path(__file__).resolve().parents[2]
CONSUL_BIN = os.environ.get("CONSUL_BIN", str(REPO / ".tools" / "bin" / "consul"))
PORT_NAMES = ("http", "grpc", "grpc_tls", "dns", "serf_lan", "serf_wan", "server")
TTL = "60s"


class ConsulAgent:
    def __init__(self, work_dir: Path, binary: str = CONSUL_BIN) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.log_path = self.work_dir / "consul.log"
        self.proc: Proc | None = None
        self.client = consul.Consul(host="127.0.0.1", port=self.ports["http"], connections_timeout=5)
        self._write_config()

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    def _write_config(self) -> None:
        ports = ", ".join(f"{name} = {port}" for name, port in self.ports.items())
        (self.work_dir / "data").mkdir(exist_ok=True)
        (self.work_dir / "agent.hcl").write_text(
            f'data_dir = "{self.work_dir / "data"}"\n'
            'bind_addr = "127.0.0.1"\nclient_addr = "127.0.0.1"\nadvertise_addr = "127.0.0.1"\n'
            f"ports {{ {ports} }}\n"
            'log_level = "info"\n'
        )

    def start(self, timeout: float = 30.0) -> ConsulAgent:
        args = [self.binary, "agent", "-dev", "-config-file", str(self.work_dir / "agent.hcl")]
        self.proc = Proc("consul", args, self.log_path, env=None, cwd=self.work_dir)
        try:
            poll_until(self._ready, timeout, 0.05, "consul to elect itself and join its own catalog")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.tail()}") from None
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.alive(), "consul exited"
        return bool(self.client.status.leader()) and bool(self.client.catalog.nodes()[1])

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else ["(no log)"]
        return f"----- consul {self.log_path} -----\n" + "\n".join(text[-lines:])

    def stop(self) -> int:
        code = self.proc.stop() if self.proc else 0
        self.proc = None
        return code

    def forget(self) -> None:
        """While stopped: drop the agent's local state, so that the next start comes back empty,
        as a restarted `consul agent -dev` with no data dir (the runner's) does."""
        assert self.proc is None, "stop the agent first"
        shutil.rmtree(self.work_dir / "data")
        (self.work_dir / "data").mkdir()

    # ---- the agent API, for tests that play a service instance ----

    def register(self, name: str, instance_id: str, port: int, meta: dict[str, str] | None = None,
                 address: str = "127.0.0.1", passing: bool = True, ttl: str = TTL) -> None:
        """Register an instance with one TTL check (`service:<instance_id>`) the test controls
        (it goes critical if not passed again within `ttl`)."""
        self.client.agent.service.register(
            name, service_id=instance_id, address=address, port=port, meta=meta or {},
            check={"TTL": ttl, "Status": "passing" if passing else "critical",
                   "DeregisterCriticalServiceAfter": "10m"},
        )

    def register_grpc_checked(self, name: str, instance_id: str, port: int, health_address: str,
                              meta: dict[str, str] | None = None, address: str = "127.0.0.1") -> None:
        """Register an instance as the runtime registers itself (docs/runtime-contract.md, "Life of
        an instance"): one gRPC health check of `health_address` that Consul runs every 1 s with a
        1 s timeout. The check starts critical and passes at Consul's first probe of a SERVING
        server; the instance goes critical at the first probe that fails."""
        self.client.agent.service.register(
            name, service_id=instance_id, address=address, port=port, meta=meta or {},
            check=consul.Check.grpc(health_address, "1s", timeout="1s", deregister="1m"),
        )

    def ttl_pass(self, instance_id: str) -> None:
        self.client.agent.check.ttl_pass(f"service:{instance_id}")

    def ttl_fail(self, instance_id: str) -> None:
        self.client.agent.check.ttl_fail(f"service:{instance_id}")

    def deregister(self, instance_id: str) -> None:
        self.client.agent.service.deregister(instance_id)

    def passing(self, name: str) -> list[str]:
        """Instance ids of `name` whose checks pass, as the catalog says now."""
        return sorted(entry["Service"]["ID"] for entry in self.client.health.service(name, passing=True)[1])

    def __repr__(self) -> str:
        return f"ConsulAgent({json.dumps(self.ports)})"
