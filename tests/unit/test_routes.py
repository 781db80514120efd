"""mesh/runtime/routes.py's route matching, as gRPC matches (gRFC A28, A31), on the route
configurations the control plane sends C-core clients (mesh.xds.translate) and on hand-built ones."""

from __future__ import annotations

import textwrap

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import duration_pb2

from mesh.runtime.routes import call_headers, compile_routes, route_timeout, select_virtual_host
from mesh.xds.istio import _State, compile_policy
from mesh.xds.names import ClientTarget, ServiceKey
from mesh.xds.translate import route_configuration

TARGET = ClientTarget(ServiceKey("pricing", "default"), 50061)
ECHO = "/polymesh.conformance.v1.ConformanceService/Echo"


def ms(value: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(value)
    return duration


def timeout_of(routes, method: str = ECHO, metadata=()) -> float | str | None:
    headers = call_headers(metadata)
    for route in routes:
        if route.matches(method, headers):
            return route.timeout
    return "no route"


def test_the_control_planes_c_core_routes_give_each_call_its_routes_timeout(tmp_path):
    (tmp_path / "vs.yaml").write_text(textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: pricing}
        spec:
          hosts: [pricing]
          http:
          - match: [{headers: {x-tier: {exact: beta}}}, {headers: {x-user: {regex: "a.*z"}}}]
            timeout: 0.3s
            route: [{destination: {host: pricing}}]
          - match: [{uri: {prefix: /shop.pricing.v1.PricingService/Quote}}]
            timeout: 1.5s
            route: [{destination: {host: pricing}}]
          - match: [{headers: {x-slow: {prefix: "y"}}}]
            route: [{destination: {host: pricing}}]
          - timeout: 2s
            route: [{destination: {host: pricing}}]
        """))
    policy, rejections, _ = compile_policy(tmp_path.glob("*.yaml"), "default", _State())
    assert rejections == {}
    config = route_configuration(TARGET, policy, exact_timeouts=False)
    for authority in ("pricing:50061", "pricing.default.svc.cluster.local:50061", "PRICING:50061"):
        assert select_virtual_host(config, authority) is config.virtual_hosts[0]
    routes = compile_routes(select_virtual_host(config, "pricing:50061"))
    assert timeout_of(routes, metadata=[("x-tier", "beta")]) == 0.3
    assert timeout_of(routes, metadata=[("x-user", "abcz")]) == 0.3
    assert timeout_of(routes, metadata=[("x-user", "abczz1")]) == 2.0  # a regex matches the whole value
    assert timeout_of(routes, "/shop.pricing.v1.PricingService/QuoteMany") == 1.5
    assert timeout_of(routes, "/shop.pricing.v1.PricingService/Quote", [("x-tier", "beta")]) == 0.3  # first wins
    assert timeout_of(routes, metadata=[("x-slow", "yes")]) is None  # its route has no timeout
    assert timeout_of(routes) == 2.0


def test_virtual_hosts_are_chosen_as_grpc_chooses_them():
    config = route_pb2.RouteConfiguration(virtual_hosts=[
        rc.VirtualHost(name="any", domains=["*"]), rc.VirtualHost(name="prefix", domains=["pricing*"]),
        rc.VirtualHost(name="suffix", domains=["*:50061"]), rc.VirtualHost(name="exact", domains=["pricing:50061"])])
    assert select_virtual_host(config, "pricing:50061").name == "exact"
    assert select_virtual_host(config, "other:50061").name == "suffix"
    assert select_virtual_host(config, "pricing:1").name == "prefix"
    assert select_virtual_host(config, "other:1").name == "any"
    assert select_virtual_host(route_pb2.RouteConfiguration(virtual_hosts=[config.virtual_hosts[3]]), "x:1") is None


def header_route(**matcher) -> rc.Route:
    return rc.Route(name="h", match=rc.RouteMatch(prefix="", headers=[rc.HeaderMatcher(name="x-h", **matcher)]),
                    route=rc.RouteAction(cluster="c", timeout=ms(100)))


@pytest.mark.parametrize("matcher, metadata, matches", [
    ({"exact_match": "a"}, [("x-h", "a")], True),
    ({"exact_match": "a"}, [("X-H", "a")], True),  # names are case-insensitive
    ({"exact_match": "a"}, [("x-h", "a"), ("x-h", "b")], False),  # values joined: "a,b"
    ({"exact_match": "a,b"}, [("x-h", "a"), ("x-h", "b")], True),
    ({"exact_match": "a"}, [], False),
    ({"exact_match": "a", "invert_match": True}, [], False),  # absent never matches, inverted or not
    ({"exact_match": "a", "invert_match": True}, [("x-h", "b")], True),
    ({"prefix_match": "ab"}, [("x-h", "abc")], True),
    ({"suffix_match": "bc"}, [("x-h", "abc")], True),
    ({"contains_match": "b"}, [("x-h", "abc")], True),
    ({"safe_regex_match": {"regex": "a+"}}, [("x-h", "aaa")], True),
    ({"safe_regex_match": {"regex": "a+"}}, [("x-h", "aab")], False),
    ({"safe_regex_match": {"regex": "("}}, [("x-h", "(")], False),  # a bad regex matches nothing
    ({"present_match": True}, [("x-h", "")], True),
    ({"present_match": True}, [], False),
    ({"present_match": False}, [], True),
    ({"present_match": True, "invert_match": True}, [], True),
    ({"range_match": {"start": 10, "end": 20}}, [("x-h", "19")], True),
    ({"range_match": {"start": 10, "end": 20}}, [("x-h", "20")], False),
    ({"string_match": {"exact": "AB", "ignore_case": True}}, [("x-h", "ab")], True),
])
def test_header_matchers(matcher, metadata, matches):
    [route] = compile_routes(rc.VirtualHost(routes=[header_route(**matcher)]))
    assert route.matches(ECHO, call_headers(metadata)) is matches


def test_binary_headers_never_match_and_content_type_is_grpcs():
    [binary] = compile_routes(rc.VirtualHost(routes=[rc.Route(
        match=rc.RouteMatch(prefix="", headers=[rc.HeaderMatcher(name="x-h-bin", present_match=True)]),
        route=rc.RouteAction(cluster="c"))]))
    assert not binary.matches(ECHO, call_headers([("x-h-bin", b"\x00")]))
    [content] = compile_routes(rc.VirtualHost(routes=[rc.Route(
        match=rc.RouteMatch(prefix="", headers=[rc.HeaderMatcher(name="content-type", exact_match="application/grpc")]),
        route=rc.RouteAction(cluster="c"))]))
    assert content.matches(ECHO, call_headers([("content-type", "text/plain")]))


def test_path_matchers():
    def route(**match) -> rc.Route:
        return rc.Route(match=rc.RouteMatch(**match), route=rc.RouteAction(cluster="c"))

    [prefix, path, regex, folded] = compile_routes(rc.VirtualHost(routes=[
        route(prefix="/polymesh."), route(path=ECHO), route(safe_regex={"regex": "/.*/Echo"}),
        route(path=ECHO.upper(), case_sensitive={"value": False})]))
    assert prefix.matches(ECHO, {}) and not prefix.matches("/shop.X/Y", {})
    assert path.matches(ECHO, {}) and not path.matches(ECHO + "Stream", {})
    assert regex.matches(ECHO, {}) and not regex.matches(ECHO + "Stream", {})
    assert folded.matches(ECHO, {})


def test_routes_with_query_parameters_are_skipped_as_grpc_skips_them():
    skipped = rc.Route(match=rc.RouteMatch(prefix="", query_parameters=[rc.QueryParameterMatcher(name="q")]),
                       route=rc.RouteAction(cluster="c", timeout=ms(100)))
    taken = rc.Route(match=rc.RouteMatch(prefix=""), route=rc.RouteAction(cluster="c", timeout=ms(200)))
    assert timeout_of(compile_routes(rc.VirtualHost(routes=[skipped, taken]))) == 0.2


def test_a_routes_timeout_is_the_smaller_of_timeout_and_max_stream_duration():
    def action(**fields) -> rc.Route:
        return rc.Route(route=rc.RouteAction(cluster="c", **fields))

    msd = rc.RouteAction.MaxStreamDuration
    assert route_timeout(action(timeout=ms(300))) == 0.3
    assert route_timeout(action(max_stream_duration=msd(max_stream_duration=ms(400)))) == 0.4
    assert route_timeout(action(timeout=ms(300), max_stream_duration=msd(max_stream_duration=ms(200)))) == 0.2
    assert route_timeout(action(max_stream_duration=msd(max_stream_duration=ms(400),
                                                        grpc_timeout_header_max=ms(500)))) == 0.5
    assert route_timeout(action(timeout=ms(0))) is None  # zero: no timeout
    assert route_timeout(action()) is None
    assert route_timeout(action(), default_msd=0.7) == 0.7  # the connection manager's
    assert route_timeout(action(max_stream_duration=msd(max_stream_duration=ms(100))), default_msd=0.7) == 0.1
    assert route_timeout(rc.Route(non_forwarding_action=rc.NonForwardingAction())) is None
