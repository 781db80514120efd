"""A thin client of the real ADS stream (`StreamAggregatedResources`) over a grpc.aio channel,
for tests that check the control plane's protocol handling message by message.

    async with AdsClient(f"127.0.0.1:{port}", instance="n1", service="orders") as ads:
        response = await ads.request(EDS, ["outbound|7000||catalog.default.svc.cluster.local"])  # no nonce
        await ads.ack(response)                                          # ACK with the same names
        resources = ads.decode(response)                                 # name -> message
        await ads.until(EDS, lambda r: ..., timeout=5)                   # ACK each push until true
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from mesh.xds import bootstrap

__all__ = ["CDS", "EDS", "LDS", "RDS", "AdsClient"]

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
MESSAGE_TYPES = {
    LDS: listener_pb2.Listener,
    RDS: route_pb2.RouteConfiguration,
    CDS: cluster_pb2.Cluster,
    EDS: endpoint_pb2.ClusterLoadAssignment,
}


class AdsClient:
    def __init__(self, target: str, instance: str = "test-node", service: str = "test", version: str = "v1",
                 namespace: str = "default") -> None:
        """A node as `mesh.xds.bootstrap` describes instance `instance` of `service`."""
        self.target = target
        described = bootstrap.bootstrap(bootstrap.Node(service, instance, version, namespace=namespace), target, ".")
        node = described["node"]
        self.node = base_pb2.Node(id=node["id"], cluster=node["cluster"], user_agent_name="tests/support/ads.py",
                                  metadata=json_format.ParseDict(node["metadata"], struct_pb2.Struct()))
        self.names: dict[str, list[str]] = {}  # type URL -> names last requested
        self._reading: asyncio.Future | None = None

    async def __aenter__(self) -> AdsClient:
        self.channel = grpc.aio.insecure_channel(self.target)
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources()
        return self

    async def __aexit__(self, *exc) -> None:
        self.call.cancel()
        await self.channel.close()

    async def send(self, type_url: str, names: Iterable[str], version: str = "", nonce: str = "",
                   error: str | None = None) -> None:
        self.names[type_url] = list(names)
        request = discovery_pb2.DiscoveryRequest(
            node=self.node, type_url=type_url, resource_names=self.names[type_url],
            version_info=version, response_nonce=nonce,
        )
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))  # INVALID_ARGUMENT
        await self.call.write(request)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        """The next response; a timeout leaves the read pending (the stream stays open)."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.call.read())
        done, _ = await asyncio.wait([self._reading], timeout=timeout)
        if not done:
            raise TimeoutError(f"no response within {timeout} s")
        response, self._reading = self._reading.result(), None
        assert response is not grpc.aio.EOF, "the control plane ended the stream"
        return response

    async def silent_for(self, seconds: float) -> None:
        """Assert that no response arrives within `seconds`."""
        try:
            unexpected = await self.recv(timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {unexpected}")

    async def request(self, type_url: str, names: Iterable[str], version: str = "") -> discovery_pb2.DiscoveryResponse:
        """A first request (no nonce) and its response."""
        await self.send(type_url, names, version=version)
        return await self.recv()

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] | None = None) -> None:
        names = self.names.get(response.type_url, []) if names is None else names
        await self.send(response.type_url, names, version=response.version_info, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DiscoveryResponse, reason: str, last_good: str = "") -> None:
        await self.send(response.type_url, self.names.get(response.type_url, []), version=last_good,
                        nonce=response.nonce, error=reason)

    @staticmethod
    def decode(response: discovery_pb2.DiscoveryResponse) -> dict:
        """Resource name -> message (ClusterLoadAssignment is named by cluster_name)."""
        out = {}
        for packed in response.resources:
            message = MESSAGE_TYPES[response.type_url]()
            assert packed.Unpack(message), packed.type_url
            out[getattr(message, "name", "") or getattr(message, "cluster_name", "")] = message
        return out

    @staticmethod
    def rds_name(listener: listener_pb2.Listener) -> str:
        """The route configuration a client listener points at."""
        hcm = http_connection_manager_pb2.HttpConnectionManager()
        assert listener.api_listener.api_listener.Unpack(hcm)
        return hcm.rds.route_config_name

    async def until(self, type_url: str, condition: Callable[[dict], object], timeout: float = 10.0) -> dict:
        """ACK every response of `type_url` until `condition(decoded resources)` is truthy;
        responses of other types are ACKed and skipped."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {type_url.rsplit('.', 1)[-1]} response satisfied the condition; last: {last}")
            try:
                response = await self.recv(remaining)
            except TimeoutError:
                continue
            await self.ack(response)
            if response.type_url == type_url:
                last = self.decode(response)
                if condition(last):
                    return last
