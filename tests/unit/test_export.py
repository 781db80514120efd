"""ChildProcessSpanProcessor (mesh/runtime/export.py): OTLP encoding and export in a child process.

What reaches the collector must be what the SDK's own exporter sends; the serving process must
never block on a full queue; shutdown flushes; the child never outlives its parent. The tests
marked `integration` export to a real Jaeger of this module's own (free ports, stopped by PID).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

import support.jaeger
from mesh.runtime import tracing
from mesh.runtime.config import load_instance_config
from mesh.runtime.export import ChildProcessSpanProcessor, rebuild_span, span_record
from support.poll import poll_until
from support.procs import Processes

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = {"service.name": "export-test", "service.version": "v7", "service.instance.id": "export-test-1"}


# -- a real Jaeger for this module -------------------------------------------------------------


class Jaeger(support.jaeger.Jaeger):
    def spans(self, trace_id: int, count: int, timeout: float = 20) -> list[dict]:
        """The trace's spans, normalized (see `_normalize`), once `count` of them have arrived."""
        return poll_until(lambda: (s := _normalize(self.resource_spans(trace_id))) and len(s) >= count and s,
                          timeout=timeout, interval=0.2, message=f"{count} spans of trace {trace_id:032x} in Jaeger")


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    procs = Processes(tmp_path_factory.mktemp("jaeger"))
    try:
        yield Jaeger(procs)
    finally:
        procs.stop_all()


def _hex(value: str) -> str:
    if len(value) in (16, 32) and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    return base64.b64decode(value).hex()


def _values(attributes: list[dict]) -> dict:
    return {a["key"]: a["value"] for a in attributes}


def _normalize(resource_spans: list[dict]) -> list[dict]:
    """Every span with its resource, ids replaced by span names (two runs of one scenario compare
    equal), sorted by name."""
    spans = [(rs["resource"], scope, span) for rs in resource_spans
             for scope in rs.get("scopeSpans", []) for span in scope["spans"]]
    names = {_hex(span["spanId"]): span["name"] for _, _, span in spans}
    normalized = []
    for resource, scope, span in spans:
        normalized.append({
            "resource": _values(resource.get("attributes", [])),
            "scope": {k: v for k, v in scope.get("scope", {}).items()},
            "name": span["name"],
            "kind": span.get("kind"),
            "parent": names.get(_hex(span["parentSpanId"]), "?remote") if span.get("parentSpanId") else None,
            "attributes": _values(span.get("attributes", [])),
            "status": span.get("status", {}),
            "events": [(e["name"], _values(e.get("attributes", []))) for e in span.get("events", [])],
            "links": [_values(link.get("attributes", [])) for link in span.get("links", [])],
            "duration": int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]),
            "flags": span.get("flags"),
        })
    return sorted(normalized, key=lambda s: s["name"])


# -- spans ---------------------------------------------------------------------------------------


def _provider(*processors, limits: SpanLimits | None = None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create(RESOURCE), span_limits=limits)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def make_trace(provider: TracerProvider, children: int = 2) -> int:
    """A server span under a remote parent, with children, events, a link and an error status;
    fixed timestamps so that two runs differ only in their ids. Returns the trace id."""
    tracer = provider.get_tracer("mesh.test", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.11.0")
    remote = trace.SpanContext(RandomIdGenerator().generate_trace_id(), 0xABCDEF, is_remote=True,
                               trace_flags=trace.TraceFlags(1), trace_state=trace.TraceState([("vendor", "x")]))
    start = 1_700_000_000_000_000_000
    root = tracer.start_span(
        "shop.catalog.v1.CatalogService/GetProduct", context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
        kind=trace.SpanKind.SERVER, start_time=start,
        attributes={"rpc.system": "grpc", "rpc.grpc.status_code": 0, "ratio": 0.5, "ok": True,
                    "tags": ("a", "b"), "sizes": (1, 2, 3)},
    )
    root.add_event("message", {"message.type": "RECEIVED", "message.id": 1}, timestamp=start + 10)
    context = trace.set_span_in_context(root)
    for index in range(children):
        child = tracer.start_span(f"child-{index:04d}", context=context, kind=trace.SpanKind.CLIENT,
                                  links=[trace.Link(remote, {"link.index": index})], start_time=start + 100 + index,
                                  attributes={"index": index})
        child.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
        child.end(end_time=start + 1000 + index)
    root.end(end_time=start + 10_000)
    return root.get_span_context().trace_id


# -- tests -------------------------------------------------------------------------------------------


def test_a_record_encodes_exactly_as_the_original_span() -> None:
    memory = InMemorySpanExporter()
    provider = _provider(SimpleSpanProcessor(memory), limits=SpanLimits(max_span_attributes=4, max_events=1,
                                                                        max_event_attributes=1, max_links=1))
    make_trace(provider)
    with provider.get_tracer("other").start_as_current_span("too-many-events") as span:
        span.add_event("one", {"a": 1, "b": 2})
        span.add_event("two")
    spans = memory.get_finished_spans()
    assert any(s.dropped_attributes for s in spans) and any(s.dropped_events for s in spans)

    rebuilt = [rebuild_span(span_record(s), spans[0].resource, {}) for s in spans]

    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()


def test_setup_tracing_exports_through_the_child_and_keeps_the_exporter_override() -> None:
    env = {"GRPC_XDS_BOOTSTRAP": "unused", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    provider = tracing.setup_tracing(load_instance_config("export-test", environ=env))
    try:
        [processor] = provider._active_span_processor._span_processors
        assert isinstance(processor, ChildProcessSpanProcessor)
    finally:
        provider.shutdown()
    assert processor._child.returncode == 0

    memory = InMemorySpanExporter()
    provider = tracing.setup_tracing(load_instance_config("export-test", environ=env), exporter=memory)
    provider.get_tracer("t").start_span("s").end()
    provider.force_flush()
    assert [s.name for s in memory.get_finished_spans()] == ["s"]
    provider.shutdown()


@pytest.mark.integration
def test_jaeger_receives_the_same_spans_as_from_the_sdk_exporter(jaeger: Jaeger) -> None:
    sdk = _provider(BatchSpanProcessor(OTLPSpanExporter(endpoint=jaeger.endpoint, insecure=True)))
    child_processor = ChildProcessSpanProcessor(Resource.create(RESOURCE), jaeger.endpoint)
    child = _provider(child_processor)
    try:
        sdk_trace = make_trace(sdk)
        child_trace = make_trace(child)
        assert sdk.force_flush() and child.force_flush()
    finally:
        sdk.shutdown()
        child.shutdown()

    expected = jaeger.spans(sdk_trace, 3)
    received = jaeger.spans(child_trace, 3)

    assert received == expected
    assert received[0]["resource"]["telemetry.sdk.language"] == {"stringValue": "python"}
    assert {k: v["stringValue"] for k, v in received[0]["resource"].items() if k in RESOURCE} == RESOURCE
    assert child_processor.dropped_spans == 0


@pytest.mark.integration
def test_shutdown_exports_everything_still_queued(jaeger: Jaeger) -> None:
    # Nothing would be exported for a minute, were it not for shutdown.
    processor = ChildProcessSpanProcessor(Resource.create(RESOURCE), jaeger.endpoint, schedule_delay_millis=60_000,
                                          max_export_batch_size=100)
    provider = _provider(processor)
    trace_id = make_trace(provider, children=499)

    started = time.monotonic()
    provider.shutdown()

    assert processor._child.returncode == 0
    assert time.monotonic() - started < 30
    assert len(jaeger.spans(trace_id, 500)) == 500


@pytest.mark.integration
def test_a_full_queue_drops_and_counts_instead_of_blocking(jaeger: Jaeger) -> None:
    processor = ChildProcessSpanProcessor(Resource.create(RESOURCE), jaeger.endpoint, max_queue_size=100)
    provider = _provider(processor)
    os.kill(processor.child_pid, signal.SIGSTOP)  # the child stops reading: the pipe, then the queue, fill up
    try:
        tracer = provider.get_tracer("mesh.test")
        with tracer.start_as_current_span("root") as root:
            trace_id = root.get_span_context().trace_id
            slowest = 0.0
            for index in range(10_000):
                span = tracer.start_span(f"s{index}", attributes={"payload": "x" * 200})
                began = time.perf_counter()
                span.end()  # on_end runs here, on this thread
                slowest = max(slowest, time.perf_counter() - began)
    finally:
        os.kill(processor.child_pid, signal.SIGCONT)
    provider.shutdown()

    assert processor.dropped_spans > 0
    assert slowest < 0.1, f"a span's end waited {slowest:.3f} s"
    kept = 10_001 - processor.dropped_spans
    assert len(jaeger.spans(trace_id, kept)) == kept


PARENT = textwrap.dedent("""
    import sys
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from mesh.runtime.export import ChildProcessSpanProcessor

    processor = ChildProcessSpanProcessor(Resource.create({"service.name": "orphan"}), sys.argv[1],
                                          schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    if sys.argv[2] == "with-span":
        provider.get_tracer("t").start_span("s").end()
    print(processor.child_pid, flush=True)
    sys.stdin.read()  # until killed
""")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("child_state", ["idle", "stuck in an export"])
def test_the_child_exits_when_its_parent_is_killed(procs: Processes, child_state: str) -> None:
    # idle: no span, the child waits on its pipe. stuck: the child exports to an endpoint that
    # accepts the connection and never answers, an export that would last a minute.
    with socket.socket() as collector:
        collector.bind(("127.0.0.1", 0))
        collector.listen()
        endpoint = f"http://127.0.0.1:{collector.getsockname()[1]}"
        spans = "no-span" if child_state == "idle" else "with-span"
        parent = procs.start("parent", [sys.executable, "-c", PARENT, endpoint, spans],
                             env={"OTEL_EXPORTER_OTLP_TIMEOUT": "60"})
        child_pid = int(poll_until(lambda: parent.log_lines()[0].strip().isdigit() and parent.log_lines()[0],
                                   timeout=20, message="the parent printing its child's pid"))
        if child_state != "idle":
            collector.settimeout(20)
            _connection, _ = collector.accept()  # the child is exporting, and stays stuck
        assert not _gone(child_pid)

        os.kill(parent.pid, signal.SIGKILL)

        poll_until(lambda: _gone(child_pid), timeout=5, message=f"child {child_pid} gone after its parent's SIGKILL")
