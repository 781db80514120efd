"""Every instance, whatever its language, logs JSON lines with the same keys."""

from __future__ import annotations

import json
import re

import pytest

from mesh.runner import topology

REQUIRED = {"timestamp", "severity", "message", "service.name", "service.instance.id"}
SEVERITIES = {"DEBUG", "INFO", "WARN", "ERROR"}
INSTANCES = [i.name for s in topology.SERVICES for i in s.instances]


@pytest.mark.parametrize("instance", INSTANCES)
def test_every_line_is_json_with_the_contract_keys(mesh, http, instance):
    http.get("/v1/products/sku-kettle")  # some traffic, so request-time lines exist too
    lines = (mesh.run_dir / "logs" / f"{instance}.log").read_text().splitlines()
    assert lines, f"{instance} logged nothing"
    for number, line in enumerate(lines, 1):
        record = json.loads(line)  # a non-JSON line fails here, with the line in the message
        missing = REQUIRED - record.keys()
        assert not missing, f"{instance}.log:{number} lacks {missing}: {line}"
        assert record["severity"] in SEVERITIES, line
        assert record["service.instance.id"] == instance
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"]), line
        if "trace_id" in record:
            assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"]) and re.fullmatch(r"[0-9a-f]{16}", record["span_id"])


def test_request_logs_carry_the_trace_id_of_the_response(mesh, http):
    reply = http.post("/v1/orders", headers={"Idempotency-Key": "log-trace"}, json={
        "customerId": "c", "currency": "USD", "items": [{"productId": "sku-espresso-cup", "quantity": 1}],
        "payment": {"cardToken": "tok_visa"}})
    assert reply.status_code == 200, reply.text
    trace_id = reply.headers["X-Trace-Id"]
    orders = [json.loads(line) for line in (mesh.run_dir / "logs" / "orders.log").read_text().splitlines()]
    assert any(r.get("trace_id") == trace_id and r["message"] == "order confirmed" for r in orders)
