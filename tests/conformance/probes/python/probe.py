"""The Python conformance probe: polymesh.conformance.v1.ConformanceService on the Python runtime
(mesh/runtime), as tests/conformance runs it. The Go and TypeScript probes beside it do the same."""

from __future__ import annotations

from opentelemetry import trace

from mesh.runtime.config import InstanceConfig
from mesh.runtime.deadlines import remaining
from mesh.runtime.errors import invalid_argument, not_found
from mesh.runtime.instance import LANGUAGE, Servicer, dial, run
from mesh.runtime.propagation import propagated_headers
from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc

Failure = conformance_pb2.Failure


class ProbeServicer(conformance_pb2_grpc.ConformanceServiceServicer):
    def __init__(self, config: InstanceConfig) -> None:
        self._config = config
        self._peers: dict[str, conformance_pb2_grpc.ConformanceServiceStub] = {}

    def _fail(self, failure: int, message: str) -> None:
        if failure == Failure.FAILURE_INVALID_ARGUMENT:
            raise invalid_argument([("message", "rejected as asked")])
        if failure == Failure.FAILURE_NOT_FOUND:
            raise not_found(f'message "{message}" not found', "MESSAGE_NOT_FOUND",
                            f"{self._config.service_name}.shop.local", [message])
        if failure == Failure.FAILURE_UNEXPECTED:
            raise RuntimeError("failing as asked")

    def Echo(self, request, context):
        left = remaining()
        self._fail(request.failure, request.message)
        reply = conformance_pb2.EchoResponse(
            message=request.message, instance_id=self._config.instance_id, language=LANGUAGE,
            deadline_remaining_ms=0 if left is None else round(left * 1000),
            trace_id=format(trace.get_current_span().get_span_context().trace_id, "032x"),
            headers={name: ", ".join(values) for name, values in propagated_headers(self._config.propagate_headers).items()},
        )
        if request.relay_to:
            if request.relay_to not in self._peers:
                self._peers[request.relay_to] = conformance_pb2_grpc.ConformanceServiceStub(
                    dial(self._config, request.relay_to))
            relayed = self._peers[request.relay_to].Echo(conformance_pb2.EchoRequest(message=request.message),
                                                         metadata=tuple(request.relay_metadata.items()),
                                                         wait_for_ready=True)
            reply.relayed.CopyFrom(relayed)
        return reply

    def EchoStream(self, request, context):
        for index in range(request.count):
            yield conformance_pb2.EchoStreamResponse(message=request.message, index=index)
        self._fail(request.failure, request.message)


def make_servicers(config: InstanceConfig, settings: object) -> list[Servicer]:
    return [Servicer.of(conformance_pb2, "ConformanceService",
                        conformance_pb2_grpc.add_ConformanceServiceServicer_to_server, ProbeServicer(config))]


if __name__ == "__main__":
    run("conformance", make_servicers)
