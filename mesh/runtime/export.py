"""Span export that keeps OTLP encoding off the request process's GIL.

The SDK's `BatchSpanProcessor` + `OTLPSpanExporter` build the OTLP protobuf messages in Python on
an export thread of the serving process; while it runs, request threads wait for the GIL (30-190 ms
p99 stalls at 1000 rps on 2 cores, see benchmarks/README.md). Here the serving process only turns
each ended span into a tuple of primitives, pickles it (C code, a few microseconds) and queues the
bytes; a handoff thread writes them to a pipe. A child process (a fresh interpreter started with
fork+exec, so no grpc thread is ever forked) rebuilds `ReadableSpan`s and hands them, in batches, to
the SDK's own `OTLPSpanExporter`: what reaches the collector is encoded by the same code as before.

    processor = ChildProcessSpanProcessor(provider.resource, endpoint="http://127.0.0.1:4317")
    provider.add_span_processor(processor)
    ...
    provider.shutdown()          # flushes what is queued, waits for the child to export and exit

Guarantees:
- A request thread never blocks: the queue is bounded (`OTEL_BSP_MAX_QUEUE_SIZE`); a span that
  finds it full is dropped and counted (`dropped_spans`, logged by the handoff thread).
- The child batches like the SDK: it exports when `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans are
  waiting, or `OTEL_BSP_SCHEDULE_DELAY` after the first span of a batch arrived.
- `force_flush()` returns once the child has exported everything queued before the call;
  `shutdown()` does the same, then the child exits.
- The child never outlives its parent: it exits on end-of-file on its pipe and, should it be
  stuck in an export, when its parent process is gone (`os.getppid()` changes).

Environment (read once, when the processor is built; the SDK's names and defaults):
- `OTEL_BSP_MAX_QUEUE_SIZE` (2048): spans waiting in the serving process; more are dropped.
- `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512): spans per OTLP export request.
- `OTEL_BSP_SCHEDULE_DELAY` (5000 ms): longest a span waits in the child before it is exported.
- `OTEL_BSP_EXPORT_TIMEOUT` (30000 ms): how long `shutdown()` waits for the child's last export.
- `OTEL_EXPORTER_OTLP_*`: read by the SDK's exporter in the child (it inherits the environment).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

if TYPE_CHECKING:  # imported where used at run time (the child process imports little)
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext

__all__ = ["ChildProcessSpanProcessor", "rebuild_span", "span_record"]

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_SCHEDULE_DELAY_MILLIS = 5000
DEFAULT_EXPORT_TIMEOUT_MILLIS = 30000
# The handoff thread wakes when the queue turns non-empty, then lets spans gather this long, so a
# busy server pays one pipe write per interval instead of one per span.
HANDOFF_INTERVAL_SECONDS = 0.05
PIPE_SIZE = 1 << 20  # bytes; Linux pipes hold 64 KiB unless asked (F_SETPIPE_SZ)
PARENT_CHECK_SECONDS = 0.2  # how often the child checks that its parent is alive
# The child's encoding is CPU work too; on a small machine it should yield to request threads.
CHILD_NICENESS = 10

_F_SETPIPE_SZ = 1031
_FRAME_HEADER = struct.Struct("<IB")  # payload length, kind
_CONFIG, _SPAN, _FLUSH = 1, 2, 3
_TOKEN = struct.Struct("<Q")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        log.warning("%s: not an integer, using %d: %r", name, default, value)
        return default
    if number <= 0:
        log.warning("%s: must be > 0, using %d: %r", name, default, value)
        return default
    return number


# -- span <-> primitives -----------------------------------------------------------------------
# A record is a tuple of str/int/float/bool/None, tuples and dicts of those: cheap to pickle, and
# untracked by the garbage collector once its containers hold only atoms.

Record = tuple[Any, ...]
_scope_records: dict[InstrumentationScope, Record] = {}


def _scope_record(scope: InstrumentationScope | None) -> Record | None:
    if scope is None:
        return None
    record = _scope_records.get(scope)
    if record is None:
        attributes = dict(scope.attributes) if scope.attributes else None
        record = (scope.name, scope.version, scope.schema_url, attributes)
        if len(_scope_records) < 1000:  # scopes are few; never let a misuse grow this unbounded
            _scope_records[scope] = record
    return record


def _context_record(context: SpanContext) -> Record:
    state = tuple(context.trace_state.items()) if context.trace_state else ()
    return (context.trace_id, context.span_id, context.is_remote, int(context.trace_flags), state)


def span_record(span: ReadableSpan) -> Record:
    """Everything the OTLP encoder reads from `span`, as primitives (see `rebuild_span`)."""
    parent = span.parent
    status = span.status
    return (
        span.name,
        _context_record(span.context),
        _context_record(parent) if parent is not None else None,
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes) if span.attributes else None,
        span.dropped_attributes,
        tuple((e.name, e.timestamp, dict(e.attributes) if e.attributes else None, e.dropped_attributes)
              for e in span.events),
        span.dropped_events,
        tuple((_context_record(link.context), dict(link.attributes) if link.attributes else None,
               link.dropped_attributes) for link in span.links),
        span.dropped_links,
        (status.status_code.value, status.description),
        _scope_record(span.instrumentation_scope),
    )


class _RebuiltSpan(ReadableSpan):
    """A `ReadableSpan` that also carries the original's dropped counts."""

    def __init__(self, *args: Any, dropped: tuple[int, int, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


def _attributes(values: dict[str, Any] | None, dropped: int) -> Mapping[str, Any]:
    from opentelemetry.attributes import BoundedAttributes

    if not dropped:
        return values or {}
    bounded = BoundedAttributes(attributes=values or {}, immutable=True)
    bounded.dropped = dropped
    return bounded


def _span_context(record: Record) -> SpanContext:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    trace_id, span_id, is_remote, flags, state = record
    return SpanContext(trace_id, span_id, is_remote, TraceFlags(flags), TraceState(list(state)) if state else None)


def rebuild_span(record: Record, resource: Resource,
                 scopes: dict[Record, InstrumentationScope] | None = None) -> ReadableSpan:
    """The inverse of `span_record`: a span the SDK's OTLP encoder encodes as it did the original.
    `scopes` caches `InstrumentationScope`s by record, so spans of one scope share one object."""
    from opentelemetry.sdk.trace import Event
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    (name, context, parent, kind, start, end, attributes, dropped_attributes, events, dropped_events,
     links, dropped_links, (status_code, description), scope) = record
    instrumentation_scope = None
    if scope is not None:
        key = (scope[0], scope[1], scope[2], tuple(sorted((scope[3] or {}).items())))
        instrumentation_scope = None if scopes is None else scopes.get(key)
        if instrumentation_scope is None:
            instrumentation_scope = InstrumentationScope(scope[0], scope[1], scope[2], scope[3])
            if scopes is not None:
                scopes[key] = instrumentation_scope
    return _RebuiltSpan(
        name,
        context=_span_context(context),
        parent=_span_context(parent) if parent is not None else None,
        resource=resource,
        attributes=_attributes(attributes, dropped_attributes),
        events=tuple(Event(event_name, _attributes(values, dropped), timestamp)
                     for event_name, timestamp, values, dropped in events),
        links=tuple(Link(_span_context(link_context), _attributes(values, dropped))
                    for link_context, values, dropped in links),
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=instrumentation_scope,
        dropped=(dropped_attributes, dropped_events, dropped_links),
    )


def _frame(kind: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(len(payload), kind) + payload


# -- the serving process's side ----------------------------------------------------------------


class ChildProcessSpanProcessor(SpanProcessor):
    """Hands ended, sampled spans to a child process that batches them and exports over OTLP/gRPC.

    `resource` is the provider's (every span of one provider shares it; it crosses the pipe once).
    Sizes and delays default to the `OTEL_BSP_*` variables (module docstring).
    """

    def __init__(
        self,
        resource: Resource,
        endpoint: str,
        *,
        insecure: bool = True,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_millis: float | None = None,
        export_timeout_millis: float | None = None,
        log_level: str = "info",
    ) -> None:
        self.max_queue_size = max_queue_size or _env_int(OTEL_BSP_MAX_QUEUE_SIZE, DEFAULT_MAX_QUEUE_SIZE)
        self.max_export_batch_size = max_export_batch_size or _env_int(
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE, DEFAULT_MAX_EXPORT_BATCH_SIZE
        )
        self.schedule_delay_millis = schedule_delay_millis or _env_int(
            OTEL_BSP_SCHEDULE_DELAY, DEFAULT_SCHEDULE_DELAY_MILLIS
        )
        self.export_timeout_millis = export_timeout_millis or _env_int(
            OTEL_BSP_EXPORT_TIMEOUT, DEFAULT_EXPORT_TIMEOUT_MILLIS
        )
        self._queue: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flush_tokens: list[int] = []  # flushes the handoff thread has still to send
        self._next_token = itertools.count(1)
        self._acked = 0  # highest flush token the child has confirmed
        self._ack_lock = threading.Lock()
        self._stopping = False
        self._shut_down = False
        self._dropped = 0
        self._reported_dropped = 0
        self._child_gone = False

        self._child = self._start_child(log_level)
        self._pipe = self._stdin.fileno()
        _grow_pipe(self._pipe)
        self._send(
            [
                _frame(
                    _CONFIG,
                    pickle.dumps(
                        {
                            "parent_pid": os.getpid(),
                            "endpoint": endpoint,
                            "insecure": insecure,
                            "resource": (dict(resource.attributes), resource.schema_url),
                            "max_export_batch_size": self.max_export_batch_size,
                            "schedule_delay_seconds": self.schedule_delay_millis / 1000,
                            "log_level": log_level,
                        }
                    ),
                )
            ]
        )
        self._handoff = threading.Thread(target=self._run_handoff, name="span-handoff", daemon=True)
        self._handoff.start()

    @property
    def _stdin(self) -> IO[bytes]:
        assert self._child.stdin is not None  # started with stdin=PIPE
        return self._child.stdin

    def _start_child(self, log_level: str) -> subprocess.Popen[bytes]:
        ack_read, ack_write = os.pipe()
        # fork+exec of a fresh interpreter (no Python runs between them): safe with grpc threads.
        child = subprocess.Popen(
            [sys.executable, "-c", "from mesh.runtime.export import _child_main; _child_main()", str(ack_write)],
            stdin=subprocess.PIPE,
            pass_fds=(ack_write,),
            close_fds=True,
        )
        os.close(ack_write)
        self._ack = ack_read
        log.debug("span export child started", extra={"pid": child.pid})
        return child

    @property
    def child_pid(self) -> int:
        return self._child.pid

    @property
    def dropped_spans(self) -> int:
        """Spans dropped because the queue was full (or the child had died)."""
        return self._dropped

    # Called on request threads: must stay cheap and must never block.
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        frame = _frame(_SPAN, pickle.dumps(span_record(span), pickle.HIGHEST_PROTOCOL))
        with self._lock:
            if self._stopping or len(self._queue) >= self.max_queue_size:
                self._dropped += 1
                return
            self._queue.append(frame)
            if len(self._queue) == 1:
                self._wake.notify()

    # The handoff thread: queue -> pipe.
    def _run_handoff(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._flush_tokens or self._stopping)
                if not (self._flush_tokens or self._stopping):
                    self._wake.wait(HANDOFF_INTERVAL_SECONDS)
                frames = list(self._queue)
                self._queue.clear()
                tokens, self._flush_tokens = self._flush_tokens, []
                stopping = self._stopping
            frames.extend(_frame(_FLUSH, _TOKEN.pack(token)) for token in tokens)
            self._send(frames)
            self._report_drops()
            if stopping:
                self._close_pipe()
                return

    def _send(self, frames: Sequence[bytes]) -> None:
        if not frames:
            return
        if self._child_gone:
            self._dropped += sum(1 for f in frames if f[4] == _SPAN)
            return
        data = memoryview(b"".join(frames))
        try:
            while data:
                data = data[os.write(self._pipe, data):]  # the GIL is released while it blocks
        except OSError as error:  # the child died: keep serving, count what cannot be exported
            self._child_gone = True
            log.error("span export child is gone (exit %s); spans will be dropped: %s", self._child.poll(), error)

    def _report_drops(self) -> None:
        dropped = self._dropped
        if dropped != self._reported_dropped:
            log.warning(
                "span queue full: %d spans dropped so far", dropped,
                extra={"dropped_spans": dropped, "max_queue_size": self.max_queue_size},
            )
            self._reported_dropped = dropped

    def _close_pipe(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()

    # Flush and shutdown.
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the child has exported every span queued before this call."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._wake:
            if self._stopping or self._child_gone:
                return False
            token = next(self._next_token)
            self._flush_tokens.append(token)
            self._wake.notify()
        return self._wait_for_ack(token, deadline)

    def _wait_for_ack(self, token: int, deadline: float) -> bool:
        with self._ack_lock:
            while self._acked < token:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._ack], [], [], left)[0]:
                    return False
                data = os.read(self._ack, _TOKEN.size * 64)
                if not data:
                    return False
                # tokens are written whole (8 bytes < PIPE_BUF) and only ever increase
                self._acked = max(self._acked, _TOKEN.unpack_from(data, len(data) - _TOKEN.size)[0])
            return True

    def shutdown(self) -> None:
        """Send what is queued, let the child export it and exit (bounded by the export timeout)."""
        with self._wake:
            if self._shut_down:
                return
            self._shut_down = self._stopping = True
            self._wake.notify()
        self._handoff.join(self.export_timeout_millis / 1000)
        try:
            code = self._child.wait(self.export_timeout_millis / 1000 + 1)
            if code:
                log.warning("span export child exited with %s", code)
        except subprocess.TimeoutExpired:
            log.warning("span export child still exporting after %d ms: killing it", self.export_timeout_millis)
            self._child.kill()
            self._child.wait()
        os.close(self._ack)
        self._report_drops()


def _grow_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size: the default still works
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


# -- the child process -------------------------------------------------------------------------


def _read_frames(fd: int, buffer: bytearray, timeout: float | None) -> tuple[list[tuple[int, bytes]], bool]:
    """Frames that arrived within `timeout` (None: wait for some), and whether the pipe hit EOF."""
    frames: list[tuple[int, bytes]] = []
    if timeout is not None and timeout <= 0:
        timeout = 0
    if not select.select([fd], [], [], timeout)[0]:
        return frames, False
    chunk = os.read(fd, PIPE_SIZE)
    if not chunk:
        return frames, True
    buffer += chunk
    offset = 0
    while len(buffer) - offset >= _FRAME_HEADER.size:
        length, kind = _FRAME_HEADER.unpack_from(buffer, offset)
        end = offset + _FRAME_HEADER.size + length
        if end > len(buffer):
            break
        frames.append((kind, bytes(buffer[offset + _FRAME_HEADER.size:end])))
        offset = end
    del buffer[:offset]
    return frames, False


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)  # the parent is gone; a span batch in flight is lost with it
        time.sleep(PARENT_CHECK_SECONDS)


def _child_main() -> None:
    """Entry point of the child: read frames from stdin, export batches, ack flushes on argv[1]."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    os.nice(CHILD_NICENESS)
    ack = int(sys.argv[1])
    fd = sys.stdin.fileno()
    buffer = bytearray()
    frames: list[tuple[int, bytes]] = []
    while not frames:  # the configuration always comes first
        frames, eof = _read_frames(fd, buffer, None)
        if eof:
            return
    kind, payload = frames.pop(0)
    assert kind == _CONFIG, kind
    config = pickle.loads(payload)
    if os.getppid() != config["parent_pid"]:
        return
    threading.Thread(target=_watch_parent, args=(config["parent_pid"],), name="parent-watch", daemon=True).start()

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from mesh.runtime import logs

    attributes, schema_url = config["resource"]
    resource = Resource(attributes, schema_url)
    logs.configure(
        str(attributes.get("service.name", "unknown")), str(attributes.get("service.instance.id", "")),
        config["log_level"],
    )
    exporter = OTLPSpanExporter(endpoint=config["endpoint"], insecure=config["insecure"])
    _ChildExporter(exporter, resource, config, ack).run(fd, buffer, frames)


class _ChildExporter:
    def __init__(self, exporter: SpanExporter, resource: Resource, config: dict[str, Any], ack: int) -> None:
        self.exporter = exporter
        self.resource = resource
        self.batch_size = config["max_export_batch_size"]
        self.delay = config["schedule_delay_seconds"]
        self.ack = ack
        self.scopes: dict[Record, InstrumentationScope] = {}
        self.pending: list[ReadableSpan] = []
        self.deadline: float | None = None  # when the oldest pending span must be exported

    def run(self, fd: int, buffer: bytearray, frames: list[tuple[int, bytes]]) -> None:
        eof = False
        while True:
            self.handle(frames)
            if eof:
                self.export_all()
                self.exporter.shutdown()
                return
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.export_all()
            timeout = None if self.deadline is None else self.deadline - time.monotonic()
            frames, eof = _read_frames(fd, buffer, timeout)

    def handle(self, frames: Iterable[tuple[int, bytes]]) -> None:
        for kind, payload in frames:
            if kind == _SPAN:
                if not self.pending:
                    self.deadline = time.monotonic() + self.delay
                self.pending.append(rebuild_span(pickle.loads(payload), self.resource, self.scopes))
                if len(self.pending) >= self.batch_size:
                    self.export(self.pending[: self.batch_size])
                    del self.pending[: self.batch_size]
                    self.deadline = time.monotonic() + self.delay if self.pending else None
            elif kind == _FLUSH:
                self.export_all()
                os.write(self.ack, payload)

    def export_all(self) -> None:
        while self.pending:
            self.export(self.pending[: self.batch_size])
            del self.pending[: self.batch_size]
        self.deadline = None

    def export(self, spans: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(spans)
        except Exception:  # one bad batch must not end the exporter
            log.exception("span export failed", extra={"spans": len(spans)})
            return
        if result.name != "SUCCESS":
            log.warning("span export failed", extra={"spans": len(spans), "result": result.name})
