"""meshctl against the running mesh, as a person runs it: a subprocess with the mesh's
MESH_RUN_DIR and MESH_PORT_OFFSET."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import tomllib
import uuid

import httpx
import pytest

from mesh.runner import topology
from support.poll import poll_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

INSTANCES = {i.name: (s.language, i.version) for s in topology.SERVICES for i in s.instances}


def meshctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mesh", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _status_ok(mesh) -> subprocess.CompletedProcess | None:
    done = meshctl(mesh.env, "status")
    return done if done.returncode == 0 else None


def test_status_every_instance_healthy_and_every_node_synced(mesh, http: httpx.Client) -> None:
    assert http.get("/v1/products/sku-grinder", params={"currency": "EUR"}).status_code == 200  # gateway's clients connect
    done = poll_until(lambda: _status_ok(mesh), 30, 0.5, "meshctl status exits 0")
    instances, xds = done.stdout.split("\nxDS clients")[0], done.stdout.split("\nxDS clients")[1]
    rows = {line.split()[0]: line.split() for line in instances.splitlines()[1:]}
    for name, (language, version) in INSTANCES.items():
        row = rows[name]
        assert (row[2], row[3], row[-1]) == (language, version, "passing"), row
    nodes = {line.split()[0]: line for line in xds.splitlines()[2:] if line.strip() and not line.startswith("control")}
    for name in INSTANCES:
        assert "SYNCED" in nodes[name] and "NACK" not in nodes[name] and "not connected" not in nodes[name], nodes[name]
    if topology.control_plane_from_env() == "istiod":  # no policy-error report there: its log (README)
        assert "control plane: istiod" in done.stdout
    else:
        assert "control plane: no policy errors" in done.stdout


def test_routes_show_the_upstream_clusters_and_endpoint_ports(mesh, http: httpx.Client) -> None:
    assert http.get("/v1/products/sku-grinder", params={"currency": "EUR"}).status_code == 200
    catalog = f"outbound|{50051 + mesh.offset}||catalog.default.svc.cluster.local"
    done = meshctl(mesh.env, "routes", "gateway")
    assert done.returncode == 0, done.stderr
    hosts = {p.name: p.host for p in topology.build(mesh.run_dir, mesh.offset)}  # own addresses under istiod
    for text in ("LISTENERS", "ROUTES", "CLUSTERS", "ENDPOINTS", catalog, f"{hosts['catalog-v1']}:{50051 + mesh.offset}",
                 f"{hosts['catalog-v2']}:{50052 + mesh.offset}", "spiffe://cluster.local/ns/default/sa/catalog"):
        assert text in done.stdout, text
    every = meshctl(mesh.env, "routes")
    rows = {line.split()[0]: line.split() for line in every.stdout.splitlines()[1:] if line.strip()}
    assert every.returncode == 0 and set(INSTANCES) <= set(rows), every.stdout
    assert int(rows["gateway"][3]) >= 3 and rows["gateway"][5] == "0", rows["gateway"]  # catalog, pricing, inventory
    as_json = json.loads(meshctl(mesh.env, "routes", "gateway", "--json").stdout)
    assert catalog in {c["name"] for c in as_json["clusters"]}
    ports = {e["endpoint"]["address"]["socketAddress"]["portValue"] for a in as_json["endpoints"] if a["name"] == catalog
             for locality in a["resource"]["endpoints"] for e in locality["lbEndpoints"]}
    assert ports == {50051 + mesh.offset, 50052 + mesh.offset}


def test_call_lists_products_with_a_trace_id(mesh) -> None:
    done = meshctl(mesh.env, "call", "catalog/ListProducts", '{"pageSize": 2}')
    assert done.returncode == 0, done.stdout + done.stderr
    body, _, footer = done.stdout.rpartition("\n\ninstance ")
    assert len(json.loads(body)["products"]) == 2
    assert re.search(r"trace id [0-9a-f]{32}\b", footer), footer
    full = meshctl(mesh.env, "call", "shop.catalog.v1.CatalogService/GetProduct", '{"id": "sku-grinder"}')
    assert full.returncode == 0 and '"sku-grinder"' in full.stdout, full.stdout
    go = meshctl(mesh.env, "call", "inventory/GetStock", '{"productId": "sku-grinder"}')  # reflection in Go
    assert go.returncode == 0 and '"available"' in go.stdout, go.stdout + go.stderr


def test_call_orders_is_denied_to_meshctl_and_answered_as_the_gateway(mesh) -> None:
    denied = meshctl(mesh.env, "call", "orders/GetOrder", '{"id": "ord_x"}')
    assert denied.returncode == 1
    answer = json.loads(denied.stdout.rpartition("\n\ninstance ")[0])
    assert answer["code"] == "PERMISSION_DENIED" and answer["message"] and "--as" in answer["hint"]
    as_gateway = meshctl(mesh.env, "call", "orders/GetOrder", '{"id": "ord_x"}', "--as", "gateway")
    answer = json.loads(as_gateway.stdout.rpartition("\n\ninstance ")[0])
    assert answer["code"] == "INVALID_ARGUMENT", answer  # no user_id: the service itself answered
    assert any(d["@type"].endswith("google.rpc.BadRequest") for d in answer["details"])


def test_misspelled_names_get_the_closest_match(mesh) -> None:
    method = meshctl(mesh.env, "call", "catalog/ListProduct")
    assert method.returncode == 2 and "did you mean shop.catalog.v1.CatalogService/ListProducts?" in method.stdout
    service = meshctl(mesh.env, "call", "catalgo/ListProducts")
    assert service.returncode == 2 and "did you mean 'catalog'?" in service.stdout
    instance = meshctl(mesh.env, "routes", "gatewy")
    assert instance.returncode == 2 and "did you mean 'gateway'?" in instance.stdout


def test_status_with_the_mesh_down_says_how_to_start_it(mesh, tmp_path) -> None:
    nothing = meshctl({**mesh.env, "MESH_RUN_DIR": str(tmp_path)}, "status")
    assert nothing.returncode != 0 and "make up" in nothing.stderr, nothing.stderr
    wrong_ports = meshctl({**mesh.env, "MESH_PORT_OFFSET": str(mesh.offset + 7)}, "status")
    assert wrong_ports.returncode != 0, wrong_ports.stdout
    assert "Consul is not answering" in wrong_ports.stderr and "make up" in wrong_ports.stderr


def test_meshctl_is_the_packages_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["meshctl"].partition(":")
    assert (module, function) == ("mesh.ctl.__main__", "main")
    assert meshctl({}, "--help").stdout.startswith("usage: meshctl")


def test_trace_of_a_call_is_a_waterfall(mesh) -> None:
    done = meshctl(mesh.env, "call", "pricing/GetQuote",
                   '{"items": [{"productId": "sku-grinder", "quantity": 1}], "currencyCode": "EUR"}')
    trace_id = re.search(r"trace id ([0-9a-f]{32})", done.stdout)
    assert trace_id, done.stdout + done.stderr

    def waterfall() -> str | None:
        shown = meshctl({**mesh.env, "COLUMNS": "100"}, "trace", trace_id.group(1))
        return shown.stdout if shown.returncode == 0 and "catalog[py]" in shown.stdout else None
    text = poll_until(waterfall, 20, 0.5, f"trace {trace_id.group(1)} in Jaeger with the catalog call")
    assert "pricing[ts] server PricingService/GetQuote" in text
    assert all(len(line) <= 100 for line in text.splitlines()[:-1])
    listed = poll_until(lambda: trace_id.group(1) in (out := meshctl(mesh.env, "traces", "--service", "pricing",
                                                                        "--last", "50").stdout) and out,
                        20, 0.5, "the trace in meshctl traces")
    assert "pricing PricingService/GetQuote" in listed
    missing = meshctl(mesh.env, "trace", "0" * 31 + "1")
    assert missing.returncode == 1 and "has no trace" in missing.stdout


def test_trace_html_of_an_order_shows_all_six_services_in_chromium(mesh, http: httpx.Client) -> None:
    from support import chromium
    chromium.require()
    reply = http.post("/v1/orders", json={
        "customerId": "html-waterfall", "currency": "EUR", "items": [{"productId": "sku-grinder", "quantity": 1}],
        "payment": {"cardToken": "tok_visa"}}, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert reply.status_code == 200, reply.text
    trace_id = reply.headers["X-Trace-Id"]
    services = {"gateway", "orders", "catalog", "pricing", "inventory", "payments"}  # an order's path (test_traces.py)
    assert services <= {s.name for s in topology.SERVICES}

    def complete() -> str | None:  # spans arrive in Jaeger about a second after the call
        shown = meshctl({**mesh.env, "COLUMNS": "160"}, "trace", trace_id)
        return shown.stdout if shown.returncode == 0 and all(f"{s}[" in shown.stdout for s in services) else None
    poll_until(complete, 20, 0.5, f"trace {trace_id} with all six services in Jaeger")
    recorded = httpx.get(f"{mesh.jaeger}/api/v3/traces/{trace_id}", timeout=5)  # kept beside the page, for a look
    (ROOT / ".run").mkdir(exist_ok=True)
    (ROOT / ".run" / "meshctl-trace.json").write_text(recorded.text)
    page = ROOT / ".run" / "meshctl-trace.html"
    page.parent.mkdir(exist_ok=True)
    done = meshctl(mesh.env, "trace", trace_id, "--html", str(page))
    assert done.returncode == 0, done.stdout + done.stderr
    dom = chromium.dump_dom(page)
    assert 'data-ready="true"' in dom and 'class="toggle"' in dom
    shown = set(re.findall(r'<tr class="span[^"]*"[^>]*data-service="([^"]+)"', dom))
    assert shown == services, shown
    chromium.screenshot(page, ROOT / ".run" / "meshctl-trace.png")
