"""Unit-test fixtures: real gRPC servers on 127.0.0.1:0 in this process, with the same
error interceptor the services use, and a client channel to them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from mesh.runtime.errors import ErrorInterceptor


@pytest.fixture
def serve() -> Iterator[Callable[..., grpc.Channel]]:
    """serve(add_fn, servicer, ...) -> channel to a plain server hosting those servicers."""
    servers, channels = [], []

    def start(*pairs) -> grpc.Channel:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[ErrorInterceptor()])
        for add, servicer in zip(pairs[::2], pairs[1::2], strict=True):
            add(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(None)
