"""Calls straight to one instance's business port, past xDS, over the mesh's mTLS: what the runner's
scenario checks and the tests use. Under istio/security.yaml every server demands a client
certificate of the mesh CA, and its AuthorizationPolicies decide by the caller's identity, so a
direct caller presents the identity it acts as (a certificate the mesh CA issues on the spot, from
the run folder's CA) and checks that the server is the service it meant (the server certificate's
DNS name `SERVICE.NAMESPACE.svc.cluster.local`, besides its SPIFFE id).

    with direct_channel(run_dir, port, "inventory", caller="orders") as channel:
        InventoryServiceStub(channel).ReserveStock(...)
"""

from __future__ import annotations

import functools
import pathlib

import grpc

from mesh.runner import topology
from mesh.xds.ca import MeshCA, WorkloadId
from mesh.xds.names import ServiceKey

__all__ = ["RUNNER_IDENTITY", "client_credentials", "direct_channel"]

RUNNER_IDENTITY = "meshctl"  # who the runner's own checks call as: a mesh workload, allowed to read
CLIENT_TTL = 3600.0


@functools.lru_cache(maxsize=64)
def _issued(ca_dir: pathlib.Path, namespace: str, caller: str) -> tuple[bytes, bytes, bytes]:
    ca = MeshCA.load(ca_dir)
    issued = ca.issue(WorkloadId(namespace, caller), CLIENT_TTL)
    return ca.root_pem, issued.key_pem, issued.cert_pem


def client_credentials(ca_dir: pathlib.Path, caller: str, namespace: str = topology.NAMESPACE) -> grpc.ChannelCredentials:
    """TLS credentials presenting `spiffe://cluster.local/ns/NAMESPACE/sa/CALLER`, trusting the mesh
    root only (one certificate per caller and CA per process; it lives an hour)."""
    root, key, chain = _issued(pathlib.Path(ca_dir).resolve(), namespace, caller)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)


def direct_channel(run_dir: pathlib.Path, port: int, service: str, caller: str = RUNNER_IDENTITY,
                   namespace: str = topology.NAMESPACE, host: str = "127.0.0.1") -> grpc.Channel:
    """A channel to HOST:PORT that must be an instance of `service`, calling as `caller`."""
    authority = ServiceKey(service, namespace).fqdn
    return grpc.secure_channel(f"{host}:{port}", client_credentials(pathlib.Path(run_dir) / "ca", caller, namespace),
                               options=[("grpc.ssl_target_name_override", authority),
                                        ("grpc.default_authority", authority)])
