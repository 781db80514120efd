import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from mesh.runtime.logs import JsonFormatter


def _format(record_logger, message, **extra):
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonFormatter("catalog", "catalog-1"))
    record_logger.addHandler(handler)
    record_logger.setLevel(logging.INFO)
    try:
        record_logger.info(message, extra=extra)
    finally:
        record_logger.removeHandler(handler)
    return json.loads(records[0])


def test_a_line_has_the_contract_keys_and_extras():
    line = _format(logging.getLogger("t1"), "hello", order_id="ord_1")
    assert line["message"] == "hello" and line["severity"] == "INFO"
    assert line["service.name"] == "catalog" and line["service.instance.id"] == "catalog-1"
    assert line["timestamp"].endswith("Z") and line["order_id"] == "ord_1"
    assert "trace_id" not in line


def test_a_line_inside_a_span_carries_its_ids():
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        line = _format(logging.getLogger("t2"), "inside")
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
