"""Free TCP ports on 127.0.0.1, for servers that must be told their port up front.

One pytest process takes the kernel's pick (port 0). Under pytest-xdist (`make test` runs the
conformance modules that mostly wait on two workers) the kernel's picks of two processes can meet:
worker A reads a free port, worker B reads the same one before A's server binds it (measured: a
Consul of each worker, "bind: address already in use"). So each worker takes its ports from a
range of its own, below the kernel's ephemeral range (32768-60999 here) and above every port a
mesh layout uses (mesh/runner/topology.py, offsets up to 9000), in turn, each checked free."""

from __future__ import annotations

import itertools
import os
import socket

__all__ = ["free_port", "free_ports"]

WORKER_RANGES_START, WORKER_RANGE_SIZE = 28000, 2000  # gw0: 28000-29999, gw1: 30000-31999

_worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under pytest-xdist
_turn: itertools.cycle[int] | None = None
if _worker.startswith("gw") and _worker[2:].isdigit() and int(_worker[2:]) < 2:
    _first = WORKER_RANGES_START + int(_worker[2:]) * WORKER_RANGE_SIZE
    _turn = itertools.cycle(range(_first, _first + WORKER_RANGE_SIZE))


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on right now (the usual small race with other programs applies).
    Prefer binding port 0 and reading the port back wherever the program allows it."""
    if _turn is not None:
        for _ in range(WORKER_RANGE_SIZE):
            port = next(_turn)
            if _is_free(port):
                return port
        raise OSError(f"no free port left in the range of pytest-xdist worker {_worker}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
