"""meshctl's rendering pieces: tables, durations, a node's xDS cells, routes and targets."""

from __future__ import annotations

from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from mesh.ctl import routes
from mesh.ctl.call import parse_target
from mesh.ctl.render import duration, table, xds_cell
from mesh.ctl.status import summarize


def test_table_aligns_columns() -> None:
    assert table([("A", "LONG"), ("xyz", "1")]) == "A    LONG\nxyz  1"


def test_duration() -> None:
    assert [duration(s) for s in (5, 65, 3725, 90000, -120)] == ["5s", "1m05s", "1h02m", "1d01h", "expired 2m00s ago"]


def test_xds_cell_worst_first() -> None:
    assert xds_cell([]) == "-"
    assert xds_cell([("ACKED", "SYNCED", "7"), ("ACKED", "SYNCED", "7")]) == "SYNCED 2 v7"
    assert xds_cell([("ACKED", "SYNCED", "7"), ("ACKED", "SYNCED", "8")]) == "SYNCED 2"
    assert xds_cell([("ACKED", "SYNCED", "7"), ("NACKED", "ERROR", "6")]) == "NACKED 1/2"
    assert xds_cell([("ACKED", "STALE", "7"), ("REQUESTED", "NOT_SENT", "")]) == "STALE 1/2"


def test_summarize_names_the_instance_and_the_nack() -> None:
    config = csds_pb2.ClientConfig()
    config.node.id = "sidecar~127.0.0.1~orders.default~default.svc.cluster.local"
    good = config.generic_xds_configs.add(type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster",
                                          name="outbound|50051||catalog.default.svc.cluster.local", version_info="3")
    good.client_status, good.config_status = dump_pb2.ACKED, csds_pb2.SYNCED
    bad = config.generic_xds_configs.add(type_url="type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                                         name="r", version_info="2")
    bad.client_status, bad.config_status = dump_pb2.NACKED, csds_pb2.ERROR
    bad.error_state.version_info, bad.error_state.details = "3", "weights sum to 0"
    node = summarize([config])
    assert node.instance == "orders"
    assert node.cells == {"LDS": "-", "RDS": "NACKED 1/1", "CDS": "SYNCED 1 v3", "EDS": "-"}
    assert node.nacks == ["RDS r: version 3 rejected: weights sum to 0"]


def test_route_line_weights_retries_timeout() -> None:
    route = route_components_pb2.Route(name="split", match=route_components_pb2.RouteMatch(prefix=""))
    action = route.route
    for name, weight in (("outbound|50061|v1|pricing", 90), ("outbound|50061|v2|pricing", 10)):
        action.weighted_clusters.clusters.add(name=name, weight=wrappers_pb2.UInt32Value(value=weight))
    action.retry_policy.retry_on = "unavailable"
    action.retry_policy.num_retries.value = 2
    action.max_stream_duration.max_stream_duration.CopyFrom(duration_pb2.Duration(nanos=500_000_000))
    line = routes._route_line(route)
    assert line == ("[split] prefix '' -> outbound|50061|v1|pricing 90 | outbound|50061|v2|pricing 10  "
                    "(timeout 0.5s, retries 2 on unavailable)")


def test_render_sections_and_json() -> None:
    cluster = cluster_pb2.Cluster(name="c", lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    cluster.outlier_detection.CopyFrom(outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=3)))
    config = route_pb2.RouteConfiguration(name="rc")
    held = {"listeners": [], "routes": [("rc", "ACKED", "1", config)], "clusters": [("c", "NACKED (bad)", "2", cluster)],
            "endpoints": []}
    text = routes.render(held)
    assert "CLUSTERS (1)\n  c  v2  [NACKED (bad)]\n    ROUND_ROBIN  outlier(consecutive5xx=3)  plaintext" in text
    assert routes.as_json(held)["clusters"][0]["resource"]["name"] == "c"


def test_parse_target() -> None:
    assert parse_target("catalog/ListProducts") == ("catalog", "", "ListProducts")
    assert parse_target("shop.catalog.v1.CatalogService/ListProducts") == (
        "catalog", "shop.catalog.v1.CatalogService", "ListProducts")


def _otlp_span(span_id: str, parent: str, name: str, start_ms: int, end_ms: int, **extra: object) -> dict:
    return {"spanId": span_id, "parentSpanId": parent, "name": name, "kind": extra.pop("kind", 2),
            "startTimeUnixNano": str(start_ms * 1_000_000), "endTimeUnixNano": str(end_ms * 1_000_000), **extra}


def _resource(service: str, *spans: dict) -> dict:
    return {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": list(spans)}]}


def test_trace_waterfall_marks_languages_errors_and_retries() -> None:
    from mesh.ctl.trace import render, short_name, spans_of
    result = {"resourceSpans": [
        _resource("orders", _otlp_span("a", "", "/shop.orders.v1.OrderService/PlaceOrder", 0, 100),
                  _otlp_span("b", "a", "/shop.inventory.v1.InventoryService/ReserveStock", 10, 30, kind=3,
                             status={"code": 2, "message": '<_InactiveRpcError details = "boom" >'},
                             attributes=[{"key": "rpc.grpc.status_code", "value": {"intValue": "14"}}]),
                  _otlp_span("c", "a", "/shop.inventory.v1.InventoryService/ReserveStock", 40, 90, kind=3)),
        _resource("inventory", _otlp_span("d", "c", "shop.inventory.v1.InventoryService/ReserveStock", 50, 80)),
    ]}
    spans = spans_of(result)
    assert short_name("grpc.shop.pricing.v1.PricingService/GetQuote") == "PricingService/GetQuote"
    text = render(spans, width=120)
    lines = text.splitlines()
    assert lines[1].startswith("· orders[py] server OrderService/PlaceOrder")
    assert lines[2].startswith("  ✗ orders[py] client InventoryService/ReserveStock") and "!" in lines[2]
    assert lines[3].strip() == "error: UNAVAILABLE: boom"
    assert lines[4].startswith("  · orders[py] client InventoryService/ReserveStock #2")
    assert lines[5].startswith("    · inventory[go] server")
    assert all(len(line) <= 120 for line in lines[:6]) and all(len(line) <= 80 for line in render(spans, 80).splitlines()[:6])
    assert "4 spans, 2 services (inventory[go], orders[py]), 1 with errors, 100.0 ms" in text


def test_traces_list_newest_first_and_errors_only() -> None:
    from mesh.ctl.trace import render_list, spans_of
    result = {"resourceSpans": [_resource(
        "gateway",
        {**_otlp_span("a", "", "POST /v1/orders", 1000, 1080), "traceId": "1" * 32},
        {**_otlp_span("b", "a", "/shop.orders.v1.OrderService/PlaceOrder", 1001, 1079, kind=3,
                      status={"code": 2, "message": "declined"}), "traceId": "1" * 32},
        {**_otlp_span("c", "", "GET /v1/products", 2000, 2003), "traceId": "2" * 32})]}
    spans = spans_of(result)
    lines = render_list(spans, 10, False).splitlines()
    assert lines[1].startswith("2" * 32) and "gateway GET /v1/products" in lines[1]
    assert lines[2].split()[-3:] == ["2", "1", "gateway[py]"]
    only = render_list(spans, 10, True).splitlines()
    assert len(only) == 2 and only[1].startswith("1" * 32)
    assert render_list(spans, 1, False).count("\n") == 1


def test_bash_completion_offers_commands_and_instances() -> None:
    import shutil
    import subprocess

    from mesh.ctl.completion import script
    bash = shutil.which("bash")
    assert bash
    probe = script("bash") + '''
COMP_WORDS=(meshctl ro); COMP_CWORD=1; _meshctl; echo "${COMPREPLY[@]}"
COMP_WORDS=(meshctl routes pricing-); COMP_CWORD=2; _meshctl; echo "${COMPREPLY[@]}"
COMP_WORDS=(meshctl call cat); COMP_CWORD=2; _meshctl; echo "${COMPREPLY[@]}"
'''
    out = subprocess.run([bash, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["routes", "pricing-v1 pricing-v2", "catalog/"]
    assert script("zsh").startswith("autoload -U +X bashcompinit")
