"""InjectedFailures (mesh/runtime/injection.py) on a plain grpcio server, inside ErrorInterceptor as
the runtime places it; the conformance suite checks it on the real xDS-managed servers."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import pytest

from mesh.runtime.errors import ErrorInterceptor
from mesh.runtime.injection import InjectedFailures

ECHO = "/t.Echo/Echo"


def echo_server(failure_percent: int, delay_ms: int, handled: list) -> tuple[grpc.Server, int]:
    def echo(request: bytes, context) -> bytes:
        handled.append(request)
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         interceptors=[ErrorInterceptor(), InjectedFailures(failure_percent, delay_ms)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo, response_serializer=bytes)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def serve():
    servers = []

    def start(failure_percent: int, delay_ms: int, handled: list) -> grpc.Channel:
        server, port = echo_server(failure_percent, delay_ms, handled)
        servers.append(server)
        return grpc.insecure_channel(f"127.0.0.1:{port}")

    yield start
    for server in servers:
        server.stop(None)


def test_every_call_fails_unavailable_at_100_percent_and_no_handler_runs(serve) -> None:
    handled: list = []
    with serve(100, 0, handled) as channel:
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(ECHO)(b"x", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == "injected failure (MESH_INJECT_FAILURE_PERCENT=100)"
    assert handled == []


def test_the_delay_comes_before_the_handler_and_yields_to_the_deadline(serve) -> None:
    handled: list = []
    with serve(0, 300, handled) as channel:
        echo = channel.unary_unary(ECHO)
        echo(b"warm", timeout=5)
        started = time.monotonic()
        assert echo(b"x", timeout=5) == b"x"
        assert 0.3 <= time.monotonic() - started < 0.6
        with pytest.raises(grpc.RpcError) as caught:
            echo(b"late", timeout=0.1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # This call's delay ends after the late call's would have: had its handler run, it ran first.
        assert echo(b"after", timeout=5) == b"after"
    assert handled == [b"warm", b"x", b"after"]
