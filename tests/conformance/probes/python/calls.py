"""Calls a mesh service's ConformanceService through the Python runtime's `dial` (xds:///NAME:PORT,
OutboundDeadline with the route timeouts of mesh/runtime/routes.py) and prints one JSON line per
call: {"call": i, "code": "OK" | "DEADLINE_EXCEEDED" | ..., "ms": elapsed, "messages": n}, timed
around the call in this process. All calls share one channel; the first is the channel's first.

usage: GRPC_XDS_BOOTSTRAP=... MESH_SERVICE_PORTS=peer=PORT python calls.py PEER CALL [CALL ...]
  CALL is JSON: {"kind": "unary" | "stream", "timeout": seconds or null, "metadata": [[k, v], ...]}
"""

from __future__ import annotations

import json
import sys
import time

import grpc

from mesh.runtime.config import load_instance_config
from mesh.runtime.instance import dial
from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc


def main() -> None:
    peer, *calls = sys.argv[1:]
    config = load_instance_config("calls")
    stub = conformance_pb2_grpc.ConformanceServiceStub(dial(config, peer))
    for index, text in enumerate(calls):
        call = json.loads(text)
        options = {"timeout": call.get("timeout"), "metadata": [tuple(m) for m in call.get("metadata", [])],
                   "wait_for_ready": True}
        messages, code = 0, "OK"
        started = time.monotonic()
        try:
            if call["kind"] == "stream":
                for _ in stub.EchoStream(conformance_pb2.EchoStreamRequest(message="s", count=3), **options):
                    messages += 1
            else:
                stub.Echo(conformance_pb2.EchoRequest(message="u"), **options)
                messages = 1
        except grpc.RpcError as error:
            code = error.code().name
        elapsed = (time.monotonic() - started) * 1000
        print(json.dumps({"call": index, "code": code, "ms": round(elapsed, 1), "messages": messages}), flush=True)


if __name__ == "__main__":
    main()
