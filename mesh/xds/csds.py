"""CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`) on the control plane's port: what
every connected node subscribes to and where each resource stands, as `istioctl proxy-status`
reads it from istiod. `meshctl status` reads this.

One ClientConfig per ADS stream (node id and metadata as the node sent them); one
GenericXdsConfig per subscribed resource:
- `version_info`: the version the node has ACKed ("" if none yet): what it runs;
- `client_status`: ACKED (it ACKed the latest version sent), NACKED, or REQUESTED (asked for,
  not ACKed yet);
- `config_status`: SYNCED (nothing newer to send), STALE (a newer version is in flight, or the
  control plane cannot update it: `error_state.details` then says why), ERROR (NACKed: the
  rejected version in `error_state.version_info`, the client's reason in `error_state.details`),
  NOT_SENT;
- `xds_config`: the resource as last sent, unless the request sets `exclude_resource_contents`.
A request's `node_matchers` are honoured for exact node ids (the one matcher meshctl uses).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from mesh.xds.server import NodeStatus, ResourceStatus

__all__ = ["CsdsServer", "client_config"]

log = logging.getLogger(__name__)


def _generic(resource: ResourceStatus, with_contents: bool) -> csds_pb2.ClientConfig.GenericXdsConfig:
    config = csds_pb2.ClientConfig.GenericXdsConfig(type_url=resource.type_url, name=resource.name,
                                                    version_info=resource.acked)
    if resource.state == "NACKED" and resource.nack is not None:  # NACKED comes with its NACK
        config.client_status, config.config_status = dump_pb2.NACKED, csds_pb2.ERROR
        config.error_state.version_info, config.error_state.details = resource.nack.version, resource.nack.reason
    elif resource.state == "ACKED":
        config.client_status = dump_pb2.ACKED
        config.config_status = csds_pb2.STALE if resource.in_flight else csds_pb2.SYNCED
    else:
        config.client_status = dump_pb2.REQUESTED
        config.config_status = csds_pb2.STALE if resource.sent else csds_pb2.NOT_SENT
    if resource.stale_reason and resource.state != "NACKED":
        config.config_status = csds_pb2.STALE
        config.error_state.details = f"control plane: {resource.stale_reason}"
    if with_contents and resource.resource is not None:
        config.xds_config.CopyFrom(resource.resource.packed)
    return config


def client_config(node: NodeStatus, with_contents: bool = True) -> csds_pb2.ClientConfig:
    config = csds_pb2.ClientConfig(node=node.node)
    config.generic_xds_configs.extend(_generic(r, with_contents) for r in node.resources)
    return config


def _wanted(request: csds_pb2.ClientStatusRequest) -> Callable[[NodeStatus], bool]:
    ids = {m.node_id.exact for m in request.node_matchers if m.HasField("node_id") and m.node_id.exact}
    return (lambda node: node.node_id in ids) if ids else (lambda node: True)


class CsdsServer(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):
    def __init__(self, nodes: Callable[[], list[NodeStatus]]) -> None:
        self._nodes = nodes

    def _answer(self, request: csds_pb2.ClientStatusRequest) -> csds_pb2.ClientStatusResponse:
        wanted = _wanted(request)
        return csds_pb2.ClientStatusResponse(config=[client_config(node, not request.exclude_resource_contents)
                                                     for node in self._nodes() if wanted(node)])

    async def FetchClientStatus(self, request: csds_pb2.ClientStatusRequest,
                                context: grpc.aio.ServicerContext[Any, Any]) -> csds_pb2.ClientStatusResponse:
        return self._answer(request)

    async def StreamClientStatus(self, request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest],
                                 context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in request_iterator:
            yield self._answer(request)
