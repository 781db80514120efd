"""How many calls an instance's business server has taken, from its own channelz (every instance
serves grpc.channelz.v1.Channelz on its admin port, in every language): a way to count which
backend served how many calls without changing the services.

    calls = server_calls("127.0.0.1:19051", 50051)   # the server listening on port 50051
    calls.started, calls.succeeded, calls.failed, calls.in_flight

A server counts every call it starts, retries' attempts included; a call that never reached it
(a fault injected by its client, a circuit breaker drop) is not counted.
"""

from __future__ import annotations

import dataclasses
import threading

import grpc
from grpc_channelz.v1 import channelz_pb2, channelz_pb2_grpc

__all__ = ["ServerCalls", "server_calls"]

TIMEOUT = 2.0

_server_ids: dict[tuple[str, int], int] = {}
_channels: dict[str, grpc.Channel] = {}
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ServerCalls:
    started: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def in_flight(self) -> int:
        return self.started - self.succeeded - self.failed

    def __sub__(self, other: ServerCalls) -> ServerCalls:
        return ServerCalls(self.started - other.started, self.succeeded - other.succeeded, self.failed - other.failed)


def _stub(admin: str) -> channelz_pb2_grpc.ChannelzStub:
    with _lock:
        channel = _channels.get(admin)
        if channel is None:
            channel = _channels[admin] = grpc.insecure_channel(admin)
    return channelz_pb2_grpc.ChannelzStub(channel)


def _listen_port(stub: channelz_pb2_grpc.ChannelzStub, socket_id: int) -> int | None:
    socket = stub.GetSocket(channelz_pb2.GetSocketRequest(socket_id=socket_id), timeout=TIMEOUT).socket
    return socket.local.tcpip_address.port if socket.local.HasField("tcpip_address") else None


def _server_id(stub: channelz_pb2_grpc.ChannelzStub, admin: str, port: int) -> int:
    """The channelz id of the server whose listen socket is on `port` (looked up once)."""
    key = (admin, port)
    if key in _server_ids:
        return _server_ids[key]
    start = 0
    while True:
        reply = stub.GetServers(channelz_pb2.GetServersRequest(start_server_id=start), timeout=TIMEOUT)
        for server in reply.server:
            if any(_listen_port(stub, ref.socket_id) == port for ref in server.listen_socket):
                _server_ids[key] = server.ref.server_id
                return server.ref.server_id
            start = max(start, server.ref.server_id + 1)
        if reply.end or not reply.server:
            raise LookupError(f"channelz at {admin} lists no server listening on port {port}")


def server_calls(admin: str, port: int) -> ServerCalls:
    """The call counters of the server listening on `port`, as the channelz at `admin` reports them."""
    stub = _stub(admin)
    server_id = _server_id(stub, admin, port)
    data = stub.GetServer(channelz_pb2.GetServerRequest(server_id=server_id), timeout=TIMEOUT).server.data
    return ServerCalls(data.calls_started, data.calls_succeeded, data.calls_failed)
