"""Where the running mesh is (as the runner placed it: MESH_RUN_DIR, MESH_PORT_OFFSET) and a
helpful error when a piece of it is not there."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import urllib.error
import urllib.request
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.runner import consul_acl, supervisor, topology

__all__ = ["Mesh", "MeshDown"]

TIMEOUT = 2.0


class MeshDown(Exception):
    """A piece of the mesh does not answer; the message says which and how to start it."""


@dataclasses.dataclass(frozen=True)
class Mesh:
    run_dir: pathlib.Path
    offset: int

    @classmethod
    def from_env(cls) -> Mesh:
        return cls(topology.run_dir_from_env(), topology.offset_from_env())

    @property
    def ports(self) -> topology.Ports:
        return topology.Ports(self.offset)

    @property
    def consul(self) -> str:
        return f"127.0.0.1:{self.ports.consul_http}"

    @property
    def xds(self) -> str:
        return f"127.0.0.1:{self.ports.xds}"

    @property
    def jaeger(self) -> str:
        return f"http://127.0.0.1:{self.ports.jaeger_query}"

    def _down(self, what: str, address: str) -> MeshDown:
        env = f"MESH_RUN_DIR={self.run_dir} MESH_PORT_OFFSET={self.offset}"
        return MeshDown(f"{what} is not answering at {address} ({env}): is the mesh up? "
                        f"`make up` starts it (with the same MESH_RUN_DIR and MESH_PORT_OFFSET), `make status` shows it")

    def require_running(self) -> None:
        """The runner's supervisor for this run folder is alive (state.json)."""
        state = self.state()
        pid = state.get("supervisor_pid")
        alive = False
        if pid and not state.get("stopped"):
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                pass
            except PermissionError:
                alive = True
        if not alive:
            raise MeshDown(f"no mesh runs from MESH_RUN_DIR={self.run_dir} (no live supervisor in its state.json): "
                           f"`make up` starts it (MESH_PORT_OFFSET and MESH_RUN_DIR choose a second mesh)")

    def consul_get(self, path: str) -> object:
        """GET Consul's HTTP API with the run folder's read-only token."""
        try:
            token = consul_acl.read_token(self.run_dir, consul_acl.READ)
        except OSError:
            token = ""
        request = urllib.request.Request(f"http://{self.consul}{path}",
                                         headers={"X-Consul-Token": token} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                return json.load(reply)
        except (OSError, urllib.error.URLError, ValueError) as error:
            raise self._down("Consul", self.consul) from error

    @property
    def control_plane(self) -> str:
        """`ours` or `istiod`: what the runner started (state.json; MESH_CONTROL_PLANE at `make up`)."""
        return str(self.state().get("control_plane", "ours"))

    @property
    def istiod_debug(self) -> str:
        return f"http://127.0.0.1:{self.ports.istiod_http}"

    def host(self, instance: str) -> str:
        """The address an instance binds: 127.0.0.1, or its own loopback address under istiod."""
        found: dict[str, Any] = next((p for p in self.state().get("processes", []) if p.get("name") == instance), {})
        return str(found.get("host") or "127.0.0.1")

    def require_control_plane(self) -> None:
        if self.control_plane == "istiod":
            try:
                with urllib.request.urlopen(f"{self.istiod_debug}/ready", timeout=TIMEOUT):
                    return
            except (OSError, urllib.error.URLError) as error:
                raise self._down("istiod", self.istiod_debug) from error
        with grpc.insecure_channel(self.xds) as channel:
            try:
                # types-grpcio-health-checking's HealthStub declares no methods
                health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE or error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise self._down("the control plane", self.xds) from None

    def jaeger_get(self, path: str) -> object:
        try:
            with urllib.request.urlopen(f"{self.jaeger}{path}", timeout=5) as reply:
                return json.load(reply)
        except urllib.error.HTTPError:
            raise
        except (OSError, urllib.error.URLError, ValueError) as error:
            raise self._down("Jaeger", self.jaeger) from error

    def state(self) -> dict[str, Any]:
        """The runner's state.json (PIDs, restarts), or an empty one."""
        return supervisor.read_state(self.run_dir)

    def instance(self, name: str) -> tuple[topology.Service, topology.Instance]:
        """The topology's instance NAME (its ports without the offset); LookupError with the closest names."""
        for service in topology.SERVICES:
            for instance in service.instances:
                if instance.name == name:
                    return service, instance
        names = [i.name for s in topology.SERVICES for i in s.instances]
        raise LookupError(f"no instance {name!r}{suggest(name, names)}; instances: {', '.join(names)}")


def suggest(name: str, choices: list[str]) -> str:
    import difflib
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
