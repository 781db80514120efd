"""The xDS bootstrap of one instance, in the shape Istio's proxyless agent writes (so real istiod
accepts the same file), and the names both sides derive from it. docs/runtime-contract.md, "xDS".

    doc = bootstrap(Node("catalog", "catalog-1", "v1"), "127.0.0.1:18000", certs_dir)
    write(path, doc)

The control plane reads the node back with `NodeIdentity.parse(node)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CERT_FILES",
    "ISTIO_VERSION",
    "SERVER_LISTENER_PREFIX",
    "SERVER_LISTENER_TEMPLATE",
    "Node",
    "NodeIdentity",
    "bootstrap",
    "write",
]

SERVER_LISTENER_PREFIX = "xds.istio.io/grpc/lds/inbound/"
SERVER_LISTENER_TEMPLATE = SERVER_LISTENER_PREFIX + "%s"
DNS_SUFFIX = "svc.cluster.local"
# The Istio line whose istiod this mesh is tested against (platform-findings.md); istiod logs a
# warning on every connection of a node that does not say its version.
ISTIO_VERSION = "1.31.0"
CERT_PROVIDER = "default"  # the instance istiod refers to for both the certificate and the root
CERT_FILES = {"certificate_file": "cert-chain.pem", "private_key_file": "key.pem", "ca_certificate_file": "root-cert.pem"}
# How often gRPC's file watchers re-read the files: rotation happens at half a certificate's life,
# so a lifetime of a few seconds (tests) still leaves a rotated certificate in use long before the
# old one expires. Reading three small files a second costs nothing measurable.
CERT_REFRESH = "1s"


@dataclasses.dataclass(frozen=True)
class Node:
    """What a bootstrap says about the instance that reads it."""

    service: str
    instance_id: str
    version: str
    host: str = "127.0.0.1"
    namespace: str = "default"

    @property
    def id(self) -> str:
        return f"sidecar~{self.host}~{self.instance_id}.{self.namespace}~{self.namespace}.{DNS_SUFFIX}"

    @property
    def labels(self) -> dict[str, str]:
        return {"app": self.service, "version": self.version}


def bootstrap(node: Node, xds_address: str, certs_dir: pathlib.Path | str) -> dict[str, Any]:
    certs = pathlib.Path(certs_dir)
    return {
        "xds_servers": [
            {"server_uri": xds_address, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}
        ],
        "node": {
            "id": node.id,
            "cluster": node.service,
            "locality": {"zone": "local"},
            "metadata": {
                "GENERATOR": "grpc",
                "NAMESPACE": node.namespace,
                "INSTANCE_IPS": node.host,
                "LABELS": node.labels,
                "ISTIO_VERSION": ISTIO_VERSION,
            },
        },
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
        "certificate_providers": {
            CERT_PROVIDER: {
                "plugin_name": "file_watcher",
                "config": {**{key: str(certs / name) for key, name in CERT_FILES.items()},
                           "refresh_interval": CERT_REFRESH},
            }
        },
    }


def write(path: pathlib.Path | str, document: dict[str, Any]) -> None:
    """Write atomically: an instance that starts meanwhile reads the old file or the new one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(document, indent=2))
    os.replace(temp, path)


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    """Who an xDS node is, read from its node id and metadata as istiod reads them. Falls back to
    `node.cluster` and `node.id` for a bootstrap of another shape (a bare test client)."""

    node_id: str
    service: str
    instance: str
    namespace: str
    ips: tuple[str, ...]
    labels: Mapping[str, str]

    @classmethod
    def parse(cls, node_id: str, cluster: str, metadata: Mapping[str, object]) -> NodeIdentity:
        parts = node_id.split("~")  # sidecar~IP~INSTANCE.NAMESPACE~NAMESPACE.svc.cluster.local
        namespace = str(metadata.get("NAMESPACE") or "")
        ips = str(metadata.get("INSTANCE_IPS") or "")
        if len(parts) == 4:
            instance, _, pod_namespace = parts[2].partition(".")
            namespace, ips = namespace or pod_namespace, ips or parts[1]
        else:
            instance = node_id
        raw_labels = metadata.get("LABELS")
        labels = {str(k): str(v) for k, v in raw_labels.items()} if isinstance(raw_labels, Mapping) else {}
        service = labels.get("app") or cluster.split(".")[0] or instance
        return cls(node_id, service, instance, namespace or "default", tuple(filter(None, ips.split(","))), labels)
