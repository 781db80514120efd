"""One order, one trace: spans from Python, Go and TypeScript with the expected service edges."""

from __future__ import annotations

import base64
import uuid

import httpx

from support.poll import poll_until

# (parent service, child service): a client span in the parent whose child is a server span
# in the child. The one table every trace test compares with.
EXPECTED_ORDER_EDGES = {
    ("gateway", "orders"),
    ("orders", "catalog"),
    ("orders", "pricing"),
    ("orders", "inventory"),
    ("orders", "payments"),
    ("pricing", "catalog"),
    ("inventory", "catalog"),
}
EXPECTED_LANGUAGES = {"python", "go", "nodejs"}


def _hex(value: str) -> str:
    """Jaeger's OTLP JSON ids: hex, or base64 in some versions."""
    if len(value) in (16, 32) and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    return base64.b64decode(value).hex()


def _attributes(attrs: list[dict]) -> dict[str, str]:
    return {a["key"]: next(iter(a["value"].values()), "") for a in attrs}


def fetch_spans(jaeger: str, trace_id: str) -> list[dict]:
    reply = httpx.get(f"{jaeger}/api/v3/traces/{trace_id}", timeout=5)
    if reply.status_code != 200:
        return []
    spans = []
    for resource_spans in reply.json()["result"]["resourceSpans"]:
        resource = _attributes(resource_spans["resource"]["attributes"])
        for scope in resource_spans.get("scopeSpans", []):
            for span in scope["spans"]:
                spans.append({
                    "trace_id": _hex(span["traceId"]),
                    "span_id": _hex(span["spanId"]),
                    "parent": _hex(span["parentSpanId"]) if span.get("parentSpanId") else "",
                    "name": span["name"],
                    "service": resource.get("service.name"),
                    "language": resource.get("telemetry.sdk.language"),
                    "version": resource.get("service.version"),
                    "instance": resource.get("service.instance.id"),
                })
    return spans


def edges(spans: list[dict]) -> set[tuple[str, str]]:
    by_id = {s["span_id"]: s for s in spans}
    found = set()
    for span in spans:
        parent = by_id.get(span["parent"])
        if parent and parent["service"] != span["service"]:
            found.add((parent["service"], span["service"]))
    return found


def test_one_order_is_one_trace_across_three_languages(http, mesh):
    reply = http.post("/v1/orders", json={
        "customerId": "tracer", "currency": "GBP", "items": [{"productId": "sku-beans-colombia", "quantity": 1}],
        "payment": {"cardToken": "tok_visa"}}, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert reply.status_code == 200, reply.text
    trace_id = reply.headers["X-Trace-Id"]
    assert len(trace_id) == 32

    spans = poll_until(
        lambda: (s := fetch_spans(mesh.jaeger, trace_id)) and edges(s) >= EXPECTED_ORDER_EDGES and s,
        timeout=20, interval=0.5, message=f"trace {trace_id} with every expected edge in Jaeger",
    )
    observed = edges(spans)
    print("\nobserved trace edges (parent -> child):")
    for parent, child in sorted(observed):
        print(f"  {parent:>10} -> {child}")
    assert {s["trace_id"] for s in spans} == {trace_id}
    assert {s["language"] for s in spans} >= EXPECTED_LANGUAGES
    assert observed == EXPECTED_ORDER_EDGES, f"unexpected edges: {observed ^ EXPECTED_ORDER_EDGES}"
    # Every span but the gateway's root has its parent in the trace: no broken context.
    roots = [s for s in spans if not s["parent"]]
    assert [r["service"] for r in roots] == ["gateway"]
    assert all(s["parent"] in {p["span_id"] for p in spans} for s in spans if s["parent"])
    assert not any("grpc.health" in s["name"] for s in spans)
    # Resource attributes name the version and the instance of every span's process.
    assert all(s["version"] in ("v1", "v2") and s["instance"] for s in spans)
    assert {s["instance"] for s in spans if s["service"] == "pricing"} <= {"pricing-v1", "pricing-v2"}
