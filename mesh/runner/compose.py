"""The mesh as Docker Compose runs it: `docker-compose.yml` is generated from the topology
(`mesh.runner.topology`: the same services, instances, versions, ports and environment as
`make up`), never edited by hand. `python -m mesh.runner compose --write` writes it; `--check`
(and tests/unit/test_compose_file.py) fails when it has drifted from the topology.

What runs (one network `mesh`, every container at a fixed address `NET.N`, NET from
`POLYMESH_NET`, default 10.77.0; the run folder is the volume `mesh`, mounted at /mesh):
- `mesh-config` (the control plane's image, once, as root): writes into the volume what the
  runner writes into `.run/`, with the same code: each instance's xDS bootstrap
  (`topology.write_bootstraps`, the container's address in its node id), Consul's ACL config and
  every token (`mesh.runner.consul_acl.prepare`), the token issuer's key and JWKS
  (`mesh.auth.tokens`); then hands the volume to the mesh's user.
- `consul` (`CONSUL_IMAGE`): `consul agent -dev` with ACLs, default deny; healthy once it answers.
- `mesh-acl` (once, after Consul is healthy): creates the policy and the tokens
  (`consul_acl.bootstrap`).
- `jaeger` (`JAEGER_IMAGE`: the official image, with its web UI).
- `control-plane`: reads the repository's `istio/` (mounted read-only: the same files, never a
  copy); its mesh CA and the certificates it issues live in the volume.
- every instance of every service, in its own container, its address as MESH_HOST.
Published on 127.0.0.1 only: the gateway (`POLYMESH_GATEWAY_PORT`, 8080), Jaeger's UI
(`POLYMESH_JAEGER_PORT`, 16686) and Consul's UI (`POLYMESH_CONSUL_PORT`, 8500).
Every container runs as the mesh's user (uid 10001), so that the control plane's 0600 keys are
readable by the instance they belong to and by no one else on the host.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import Any

import yaml

from mesh.auth.tokens import SigningKey
from mesh.runner import consul_acl, topology

__all__ = ["COMPOSE_FILE", "IMAGES", "MESH_UID", "addresses", "placement", "render"]

COMPOSE_FILE = topology.ROOT / "docker-compose.yml"
PROJECT = "polymesh"
NET_VARIABLE, DEFAULT_NET = "POLYMESH_NET", "10.77.0"
NET = f"${{{NET_VARIABLE}:-{DEFAULT_NET}}}"  # compose interpolates it in every address
MESH_UID = "10001:10001"
VOLUME_PATH = pathlib.PurePosixPath("/mesh")
ISTIO_PATH = pathlib.PurePosixPath("/istio")
IMAGE_TAG = "dev"
CONSUL_IMAGE = "${CONSUL_IMAGE:-hashicorp/consul:1.22.3}"
JAEGER_IMAGE = "${JAEGER_IMAGE:-jaegertracing/jaeger:2.13.0}"
# The base images a Dockerfile takes as build arguments: unset, the Dockerfile's own public
# default; set (.ci/run does, where no registry answers), a local build of the same.
BUILD_ARGS = ["PYTHON_BASE", "NODE_BASE", "NODE_BUILD_BASE", "GO_BUILD_BASE", "GO_RUNTIME_BASE"]
PUBLISHED = {"gateway": ("POLYMESH_GATEWAY_PORT", "gateway"), "jaeger": ("POLYMESH_JAEGER_PORT", "jaeger_query"),
             "consul": ("POLYMESH_CONSUL_PORT", "consul_http")}
DOCKERFILES = {"control-plane": "mesh/xds/Dockerfile",
               **{s.name: f"services/{s.name}/Dockerfile" for s in topology.SERVICES}}
IMAGES = {name: f"polymesh/{name}:{IMAGE_TAG}" for name in DOCKERFILES}


def addresses() -> dict[str, int]:
    """The last byte of every container's address: infrastructure first, then the instances in
    topology order."""
    fixed = {"consul": 2, "jaeger": 3, "control-plane": 4, "mesh-config": 5, "mesh-acl": 6}
    instances = [i.name for s in topology.SERVICES for i in s.instances]
    return {**fixed, **{name: 10 + n for n, name in enumerate(instances)}}


def placement(net: str) -> topology.Placement:
    """Where everything is inside the compose network NET.0/24 (NET may be compose's `${...}`)."""
    at = {name: f"{net}.{last}" for name, last in addresses().items()}
    p = topology.Ports(0)
    return topology.Placement(pathlib.Path(VOLUME_PATH), 0, f"{at['consul']}:{p.consul_http}",
                              f"{at['control-plane']}:{p.xds}", f"http://{at['jaeger']}:{p.otlp_grpc}",
                              pathlib.Path(ISTIO_PATH), lambda name: at[name])


def _build(image: str) -> dict[str, Any]:
    return {"context": ".", "dockerfile": DOCKERFILES[image], "args": BUILD_ARGS}


def _network(name: str) -> dict[str, Any]:
    return {"mesh": {"ipv4_address": f"{NET}.{addresses()[name]}"}}


def _published(name: str) -> list[str]:
    variable, port = PUBLISHED[name]
    inside = topology.BASE_PORTS[port]
    return [f"127.0.0.1:${{{variable}:-{inside}}}:{inside}"]


def render() -> str:
    where = placement(NET)
    volume = [f"mesh:{VOLUME_PATH}"]
    setup_env = {NET_VARIABLE: NET}
    services: dict[str, dict[str, Any]] = {
        "mesh-config": {
            "image": IMAGES["control-plane"], "build": _build("control-plane"), "user": "0:0",
            "command": ["python", "-m", "mesh.runner", "compose-setup", "config"],
            "environment": setup_env, "volumes": volume, "networks": _network("mesh-config"),
        },
        "consul": {
            "image": CONSUL_IMAGE, "user": MESH_UID, "entrypoint": ["consul"],
            "command": ["agent", "-dev", "-log-json", f"-node={topology.CONSUL_NODE}", "-client=0.0.0.0",
                        f"-bind={NET}.{addresses()['consul']}", "-dns-port=-1",
                        "-config-file", str(VOLUME_PATH / "consul" / "acl.json")],
            "volumes": volume, "networks": _network("consul"), "ports": _published("consul"),
            "depends_on": {"mesh-config": {"condition": "service_completed_successfully"}},
            # the management token is the agent's own from its first second (initial_management)
            "healthcheck": {"test": ["CMD", "consul", "members", "-token-file",
                                     str(VOLUME_PATH / "consul" / "tokens" / f"{consul_acl.MANAGEMENT}.token")],
                            "interval": "1s", "timeout": "2s", "retries": 60},
        },
        "mesh-acl": {
            "image": IMAGES["control-plane"], "user": MESH_UID, "pull_policy": "never",
            "command": ["python", "-m", "mesh.runner", "compose-setup", "acl"],
            "environment": setup_env, "volumes": volume, "networks": _network("mesh-acl"),
            "depends_on": {"consul": {"condition": "service_healthy"}},
        },
        # Jaeger v2's built-in configuration listens on localhost unless told otherwise
        "jaeger": {"image": JAEGER_IMAGE, "environment": {"JAEGER_LISTEN_HOST": "0.0.0.0"},
                   "networks": _network("jaeger"), "ports": _published("jaeger")},
        "control-plane": {
            "image": IMAGES["control-plane"], "user": MESH_UID, "pull_policy": "never",
            "environment": topology.control_plane_env(where),
            "volumes": [*volume, f"./istio:{ISTIO_PATH}:ro"], "networks": _network("control-plane"),
            "depends_on": {"mesh-acl": {"condition": "service_completed_successfully"},
                           "jaeger": {"condition": "service_started"}},
        },
    }
    built: set[str] = {"control-plane"}
    for service in topology.SERVICES:
        for instance in service.instances:
            entry = {"image": IMAGES[service.name], "user": MESH_UID,
                     "environment": topology.instance_env(service, instance, where),
                     "volumes": volume, "networks": _network(instance.name),
                     "depends_on": {"control-plane": {"condition": "service_healthy"},
                                    "mesh-acl": {"condition": "service_completed_successfully"}}}
            if service.name in built:
                entry["pull_policy"] = "never"  # built once, by its first instance
            else:
                entry["build"] = _build(service.name)
                built.add(service.name)
            if service.protocol == "http":
                entry["ports"] = _published(service.name)
            services[instance.name] = entry
    document = {
        "name": PROJECT,
        "services": services,
        "networks": {"mesh": {"ipam": {"config": [{"subnet": f"{NET}.0/24"}]}}},
        "volumes": {"mesh": {}},
    }
    header = ("# Generated from mesh/runner/topology.py by `python -m mesh.runner compose --write`: do not edit.\n"
              "# `make compose-up` (or MESH_RUNTIME=compose make up) runs it; README \"Run with Docker\".\n")
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120)


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors for values several services share; a short list of scalars (a
    command, a port) on one line, everything else a block."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _sequence(dumper: yaml.SafeDumper, data: list[object]) -> yaml.Node:
    short = all(isinstance(item, (str, int)) for item in data) and sum(len(str(item)) for item in data) < 90
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=short)


_Dumper.add_representer(list, _sequence)


# -- what runs inside the stack (python -m mesh.runner compose-setup config|acl) -----------------------------
def setup(step: str) -> int:
    net = os.environ.get(NET_VARIABLE, DEFAULT_NET)
    where = placement(net)
    services = [s.name for s in topology.SERVICES]
    if step == "config":
        topology.write_bootstraps(where)
        consul_acl.prepare(where.run_dir, services)
        SigningKey.load_or_create(topology.auth_dir(where.run_dir))  # the gateway's JWKS (mesh/auth/tokens.py)
        for sub in ("data", "certs"):
            (where.run_dir / sub).mkdir(exist_ok=True)
        uid, gid = (int(x) for x in MESH_UID.split(":"))
        for folder, dirs, files in os.walk(where.run_dir):
            for name in [*dirs, *files]:
                os.chown(os.path.join(folder, name), uid, gid)
        os.chown(where.run_dir, uid, gid)
        print(f"wrote the bootstraps and Consul's ACL config into {where.run_dir}")
        return 0
    tokens = {name: consul_acl.read_token(where.run_dir, name) for name in consul_acl.token_names(services)}
    deadline = time.monotonic() + 60
    while True:  # Consul makes the management token once it leads, a moment after it answers
        try:
            consul_acl.bootstrap(where.consul, tokens, services, topology.CONSUL_NODE)
            break
        except consul_acl.Unready as error:
            if time.monotonic() > deadline:
                print(f"Consul at {where.consul} did not take the tokens: {error}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    print(f"created the Consul tokens of {', '.join(services)} and the control plane")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.runner compose", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {COMPOSE_FILE.name}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the topology")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        COMPOSE_FILE.write_text(text)
        print(f"wrote {COMPOSE_FILE}")
        return 0
    if args.check:
        current = COMPOSE_FILE.read_text() if COMPOSE_FILE.exists() else ""
        if current != text:
            print(f"{COMPOSE_FILE} differs from the topology: python -m mesh.runner compose --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0
