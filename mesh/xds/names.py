"""xDS resource names, as istiod's proxyless generator (`pilot/pkg/networking/grpcgen`) uses them.

- a client dials `xds:///HOST:PORT`, HOST one of `NAME`, `NAME.NS`, `NAME.NS.svc`,
  `NAME.NS.svc.cluster.local`; its listener is named exactly as asked;
- that listener's route configuration, its cluster and the cluster's EDS name are all
  `outbound|PORT||NAME.NS.svc.cluster.local` (subsets: `outbound|PORT|SUBSET|FQDN`);
- an xDS-managed server asks for `xds.istio.io/grpc/lds/inbound/HOST:PORT`;
- a workload's identity is `spiffe://cluster.local/ns/NS/sa/SERVICE_ACCOUNT` (Istio's), and every
  instance of a service runs as the service account named like the service.
Only parsing and formatting here; what a name resolves to is `resources`' business.
"""

from __future__ import annotations

import dataclasses

from mesh.xds.bootstrap import DNS_SUFFIX, SERVER_LISTENER_PREFIX

__all__ = [
    "SERVER_LISTENER_PREFIX",
    "TRUST_DOMAIN",
    "ClientTarget",
    "ServiceKey",
    "cluster_name",
    "parse_client_listener",
    "parse_cluster_name",
    "parse_server_listener",
    "spiffe_id",
]

OUTBOUND = "outbound"
TRUST_DOMAIN = "cluster.local"


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


@dataclasses.dataclass(frozen=True, order=True)
class ServiceKey:
    """A mesh service by namespace and name; its FQDN is what istiod keys everything on."""

    name: str
    namespace: str

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.{DNS_SUFFIX}"

    @property
    def spiffe_id(self) -> str:
        """The identity its instances serve with (service account = service name)."""
        return spiffe_id(self.namespace, self.name)

    def hosts(self) -> list[str]:
        """Every host form a client may dial this service by (a route's virtual host matches all)."""
        short = f"{self.name}.{self.namespace}"
        return [self.name, short, f"{short}.svc", self.fqdn]


@dataclasses.dataclass(frozen=True)
class ClientTarget:
    """What a client listener name (`HOST:PORT`) asks for."""

    service: ServiceKey
    port: int


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def parse_client_listener(name: str, namespace: str) -> ClientTarget | None:
    """`HOST:PORT` -> the service and port; `namespace` is the asking node's, for a bare NAME.
    None for anything else: a portless name (istiod answers none either) or a foreign domain."""
    host, sep, port_text = name.rpartition(":")
    port = _port(port_text)
    if not sep or port is None or not host or name.startswith(SERVER_LISTENER_PREFIX):
        return None
    for suffix in ("." + DNS_SUFFIX, ".svc"):
        if host.endswith(suffix):
            host = host.removesuffix(suffix)
            if host.count(".") != 1:
                return None
            break
    parts = host.split(".")
    if len(parts) == 1:
        parts.append(namespace)
    if len(parts) != 2 or not all(parts):
        return None
    return ClientTarget(ServiceKey(parts[0], parts[1]), port)


def cluster_name(target: ClientTarget, subset: str = "") -> str:
    return f"{OUTBOUND}|{target.port}|{subset}|{target.service.fqdn}"


def parse_cluster_name(name: str) -> tuple[ClientTarget, str] | None:
    """`outbound|PORT|SUBSET|FQDN` -> (target, subset); the inverse of `cluster_name`."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != OUTBOUND or _port(parts[1]) is None:
        return None
    target = parse_client_listener(f"{parts[3]}:{parts[1]}", namespace="")
    if target is None or not parts[3].endswith("." + DNS_SUFFIX):
        return None
    return target, parts[2]


def parse_server_listener(name: str) -> tuple[str, int] | None:
    """`xds.istio.io/grpc/lds/inbound/HOST:PORT` -> (HOST, PORT); IPv6 hosts come in brackets."""
    if not name.startswith(SERVER_LISTENER_PREFIX):
        return None
    host, _, port_text = name.removeprefix(SERVER_LISTENER_PREFIX).rpartition(":")
    host, port = host.removeprefix("[").removesuffix("]"), _port(port_text)
    if not host or port is None:
        return None
    return host, port
