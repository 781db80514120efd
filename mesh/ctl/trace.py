"""`meshctl trace ID`: one trace from Jaeger's query API as a waterfall in the terminal: a span a
line, indented under its parent, its service marked by language, a bar where it ran on the
trace's time line, its duration; errors marked with their status; a repeated call under one
parent (a retry) numbered."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
import urllib.error
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from mesh.ctl.where import Mesh
from mesh.runner import topology

__all__ = ["Span", "ordered", "render", "render_list", "run", "run_list", "spans_of"]

LANGUAGE_MARK = {"python": "py", "go": "go", "typescript": "ts", "nodejs": "ts", "js": "ts"}
ERROR = 2  # OTLP status code
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclasses.dataclass
class Span:
    span_id: str
    parent_id: str
    service: str
    language: str
    name: str
    kind: str
    start: int  # ns
    end: int
    error: str  # "" or the status (message / gRPC code)
    trace_id: str = ""
    attributes: dict[str, object] = dataclasses.field(default_factory=dict)  # the span's own, as Jaeger gives them


def _attrs(items: list[dict[str, Any]]) -> dict[str, object]:
    return {a["key"]: next(iter(a.get("value", {}).values()), "") for a in items}


def spans_of(result: dict[str, Any]) -> list[Span]:
    """The spans of an /api/v3/traces answer (OTLP JSON)."""
    languages = {s.name: s.language for s in topology.SERVICES}
    out = []
    for resource_spans in result.get("resourceSpans", []):
        resource = _attrs(resource_spans.get("resource", {}).get("attributes", []))
        service = str(resource.get("service.name", "?"))
        language = languages.get(service) or str(resource.get("telemetry.sdk.language", ""))
        for scope in resource_spans.get("scopeSpans", []):
            for s in scope.get("spans", []):
                attributes = _attrs(s.get("attributes", []))
                status = s.get("status") or {}
                error = ""
                grpc_code = _int(attributes.get("rpc.grpc.status_code"))
                if status.get("code") in (ERROR, "STATUS_CODE_ERROR") or grpc_code:
                    error = _one_line(status.get("message") or "")
                    if grpc_code:
                        error = f"{_code_name(grpc_code)}" + (f": {error}" if error else "")
                    error = error or "error"
                out.append(Span(s["spanId"], s.get("parentSpanId", ""), service, language, short_name(s.get("name", "?")),
                                KINDS.get(s.get("kind", 0), ""), int(s["startTimeUnixNano"]),
                                int(s["endTimeUnixNano"]), str(error), s.get("traceId", ""), attributes))
    return out


def short_name(name: str) -> str:
    """`/shop.orders.v1.OrderService/PlaceOrder` (Python), `grpc.shop...` (Node.js), `shop...` (Go):
    all `OrderService/PlaceOrder`."""
    service, slash, method = name.lstrip("/").removeprefix("grpc.").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{method}" if slash and "." in service else name


def _int(value: object) -> int:
    try:
        return int(cast(Any, value))  # whatever it is: int() says whether it is a number
    except (TypeError, ValueError):
        return 0


def _code_name(code: int) -> str:
    import grpc
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), f"gRPC status {code}")


def _one_line(message: str) -> str:
    """A Python client span's message is the repr of the RpcError: its `details = "..."` is the point."""
    marker = 'details = "'
    if marker in message:
        return message.split(marker, 1)[1].split('"', 1)[0]
    return " ".join(message.split())


def ordered(spans: list[Span]) -> list[tuple[int, Span, int]]:
    """(depth, span, attempt) depth-first, children by start time; attempt > 1 for a repeated call."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_id if s.parent_id in ids else "", []).append(s)
    out: list[tuple[int, Span, int]] = []

    def walk(parent: str, depth: int) -> None:
        seen: dict[tuple[str, str, str], int] = {}
        for s in sorted(children.get(parent, []), key=lambda s: s.start):
            key = (s.service, s.name, s.kind)
            seen[key] = seen.get(key, 0) + 1
            out.append((depth, s, seen[key]))
            walk(s.span_id, depth + 1)

    walk("", 0)
    return out


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def render(spans: list[Span], width: int = 100) -> str:
    if not spans:
        return "(no spans)"
    start, end = min(s.start for s in spans), max(s.end for s in spans)
    total = max(end - start, 1)
    rows = []
    for depth, s, attempt in ordered(spans):
        mark = LANGUAGE_MARK.get(s.language, s.language[:2] or "??")
        retry = f" #{attempt}" if attempt > 1 else ""
        label = f"{'  ' * depth}{'✗' if s.error else '·'} {s.service}[{mark}] {s.kind} {s.name}{retry}"
        rows.append((label, s))
    label_width = min(max(len(label) for label, _ in rows), max(width // 2, 20))
    duration_width = 10
    bar_width = max(width - label_width - duration_width - 4, 10)
    lines = [f"{'SPAN':<{label_width}}  {'0':<{bar_width // 2}}{_ms(total):>{bar_width - bar_width // 2}}  DURATION"]
    for label, s in rows:
        if len(label) > label_width:
            label = label[:label_width - 1] + "…"
        left = round((s.start - start) / total * bar_width)
        length = max(1, round((s.end - s.start) / total * bar_width))
        left = min(left, bar_width - 1)
        length = min(length, bar_width - left)
        bar = " " * left + ("!" if s.error else "█") * length
        lines.append(f"{label:<{label_width}}  {bar:<{bar_width}}  {_ms(s.end - s.start):>{duration_width}}")
        if s.error:
            lines.append(f"{'':<{label_width}}    error: {s.error}")
    services = sorted({f"{s.service}[{LANGUAGE_MARK.get(s.language, s.language)}]" for s in spans})
    errors = sum(1 for s in spans if s.error)
    lines.append(f"\n{len(spans)} spans, {len(services)} services ({', '.join(services)}), "
                 f"{errors} with errors, {_ms(total)}")
    return "\n".join(lines)


SETTLED = 1.5  # seconds without a new span after which a trace counts as complete (--wait)


def _fetch(mesh: Mesh, trace_id: str) -> list[Span] | None:
    """The trace's spans; None when Jaeger has none of it."""
    try:
        answer = mesh.jaeger_get(f"/api/v3/traces/{trace_id}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    assert isinstance(answer, dict)
    return spans_of(answer.get("result", {}))


def _fetch_settled(mesh: Mesh, trace_id: str, wait: float) -> list[Span] | None:
    """With `wait` > 0: poll until the trace has spans and no new one came for SETTLED seconds
    (every process exports its spans in batches, a second or so after the call), or `wait` is up."""
    deadline = time.monotonic() + wait
    spans = _fetch(mesh, trace_id)
    count, since = (len(spans) if spans else 0), time.monotonic()
    while time.monotonic() < deadline and not (spans and time.monotonic() - since >= SETTLED):
        time.sleep(0.25)
        spans = _fetch(mesh, trace_id)
        if spans and len(spans) != count:
            count, since = len(spans), time.monotonic()
    return spans


def run(mesh: Mesh, trace_id: str, html_file: str | None = None, wait: float = 0) -> int:
    try:
        spans = _fetch_settled(mesh, trace_id, wait)
    except urllib.error.HTTPError as error:
        print(f"Jaeger answered {error.code} for trace {trace_id}")
        return 1
    if not spans:
        later = f"in {wait:g} s" if wait else "yet: spans arrive about a second after a call; --wait 10 waits for them"
        print(f"Jaeger ({mesh.jaeger}) has no trace {trace_id} ({later})")
        return 1
    if html_file:
        from mesh.ctl import trace_html
        pathlib.Path(html_file).write_text(trace_html.page(spans, trace_id), encoding="utf-8")
        print(f"{html_file}: {len(spans)} spans of trace {trace_id}")
        return 0
    print(render(spans, shutil.get_terminal_size((100, 24)).columns))
    return 0


def render_list(spans: list[Span], last: int, errors_only: bool) -> str:
    """One line per trace, newest first: id, start, root span, duration, spans, services, errors."""
    traces: dict[str, list[Span]] = {}
    for s in spans:
        traces.setdefault(s.trace_id, []).append(s)
    rows = [("TRACE", "START (UTC)", "ROOT", "DURATION", "SPANS", "ERRORS", "SERVICES")]
    ordered = sorted(traces.items(), key=lambda item: -min(s.start for s in item[1]))
    shown = 0
    for trace_id, members in ordered:
        failed = sum(1 for s in members if s.error)
        if errors_only and not failed:
            continue
        ids = {s.span_id for s in members}
        root = min((s for s in members if s.parent_id not in ids), key=lambda s: s.start, default=members[0])
        start, end = min(s.start for s in members), max(s.end for s in members)
        services = sorted({f"{s.service}[{LANGUAGE_MARK.get(s.language, s.language)}]" for s in members})
        rows.append((trace_id, datetime.fromtimestamp(start / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3],
                     f"{root.service} {root.name}", _ms(end - start), str(len(members)), str(failed) if failed else "-",
                     " ".join(services)))
        shown += 1
        if shown == last:
            break
    if len(rows) == 1:
        return "(no traces)"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def run_list(mesh: Mesh, service: str | None, last: int, errors_only: bool, minutes: float) -> int:
    names = [s.name for s in topology.SERVICES]
    if service and service not in names:
        from mesh.ctl.where import suggest
        print(f"no service {service!r}{suggest(service, names)}; services: {', '.join(names)}")
        return 2
    now = datetime.now(UTC)
    depth = max(last * (5 if errors_only else 1), 20)
    spans: list[Span] = []
    for name in [service] if service else names:
        query = urllib.parse.urlencode({
            "query.service_name": name, "query.search_depth": depth, "query.num_traces": depth,
            "query.start_time_min": (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "query.start_time_max": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
        try:
            answer = mesh.jaeger_get(f"/api/v3/traces?{query}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                continue
            print(f"Jaeger answered {error.code} for the traces of {name}")
            return 1
        assert isinstance(answer, dict)
        spans += spans_of(answer.get("result", {}))
    unique = {(s.trace_id, s.span_id): s for s in spans}
    print(render_list(list(unique.values()), last, errors_only))
    return 0
