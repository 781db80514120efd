"""Route timeouts from the process's own xDS client config (docs/runtime-contract.md, "Calls between services").

A VirtualService `http[].timeout` reaches Go and TypeScript as the route's `max_stream_duration`,
which gRPC enforces. grpcio (gRPC C-core) fires that (and any service-config timeout) 1.1-1.9 s
too early (grpc/grpc#34547, #40633; `tests/xds/test_grpcio_route_timeouts.py` shows it), so the
control plane sends C-core clients the timeout in `RouteAction.timeout` only, which gRPC ignores,
and the runtime applies it here as the call's own deadline, which grpcio keeps exactly. Being
the call's deadline, it also cuts a fault delay of the route (as in grpc-js; grpc-go, like Envoy,
starts the route timeout after the delay).

For a call on `xds:///NAME:PORT` the route is found as gRPC finds it (gRFC A28): the Listener
named `NAME:PORT`, its HttpConnectionManager's route configuration (RDS, or inline), the virtual
host whose domains match the authority `NAME:PORT` (exact, then the longest `*suffix`, the longest
`prefix*`, then `*`), and the first route whose match matches the call: path (`prefix`, `path`,
`safe_regex`, `case_sensitive`) and every header matcher (`exact_match`, `prefix_match`,
`suffix_match`, `contains_match`, `safe_regex_match`, `present_match`, `range_match`,
`string_match`, `invert_match`) against the call's metadata (values of one name joined by ",";
names ending in `-bin` never match; `content-type` is `application/grpc`). Routes with
`query_parameters` are skipped, as gRPC skips them; `runtime_fraction` is not evaluated (the
route counts as matching): gRPC's own random pick cannot be known. The route's timeout is the
smaller of `RouteAction.timeout` and `max_stream_duration` (its `grpc_timeout_header_max` when
set, else its `max_stream_duration`, else the HttpConnectionManager's), zero or unset meaning none.

The metadata matched is the call's when `OutboundDeadline` sees it: headers an interceptor inside
it (nearer the channel) adds are not seen, so header-adding interceptors go outside it.

The config comes from `grpc._cython.cygrpc.dump_xds_configs()` (a serialized
envoy.service.status.v3.ClientStatusResponse, what grpcio-csds serves; private grpcio API, pinned
with grpcio). Cost, measured with grpcio 1.85.1 on the 2-core dev machine (best of 5 x 3000):
| the process's xDS config | dump | parse it | + compile one target | `bound()` per call |
|---|---|---|---|---|
| 1 service, 1 endpoint (2.5 KB) | 2 µs | 3 µs | 21 µs | 1.9 µs |
| 11 services, 501 endpoints (35 KB) | 21 µs | 28 µs | 47 µs | 1.9 µs |
against ~0.35-0.45 ms p50 for a unary call through `dial()` on loopback. So the dump is taken at
most every `REFRESH_SECONDS` (0.1 s) per process, parsed only when its bytes change, and a
target's routes compiled once per change: a call pays a clock read, dict lookups and its
route's matchers (the 1.9 µs); one call in 0.1 s also pays a dump and a bytes comparison.
A policy edit is therefore followed within 0.1 s of grpcio receiving it.

The first call on a new (or idle) channel finds no config yet: gRPC itself holds such a call until
its resolver has the listener and routes. `RouteTimeouts.bound` does the same: it asks the channel
to connect and re-reads the dump every `WAIT_STEP` until the target's listener and route
configuration are there, gRPC says they do not exist, the channel fails, or the call's time is up;
the route timeout then counts from there, as gRPC's max_stream_duration counts from routing.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as config_dump
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.status.v3 import csds_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # grpcio's private core module: not in its stubs

from mesh.runtime.interceptors import replaced

__all__ = ["REFRESH_SECONDS", "AioRouteTimeouts", "RouteTimeouts", "compile_routes", "route_timeout", "select_virtual_host"]

REFRESH_SECONDS = 0.1  # the dump is re-read at most this often per process
WAIT_STEP = 0.002  # seconds between reads while a new channel waits for its config
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_CONFIGURATION = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# gRPC has nothing for the name and will fail calls that need it (a NACKed resource without contents:
# its first version was rejected)
_GONE = (config_dump.DOES_NOT_EXIST, config_dump.NACKED, config_dump.RECEIVED_ERROR, config_dump.TIMEOUT)


class _Pending(enum.Enum):
    PENDING = "the config is not there yet"


_PENDING = _Pending.PENDING
Metadata = Iterable[tuple[str, str | bytes]] | None
_Request = TypeVar("_Request")
_Call = TypeVar("_Call")


# ---- route matching (pure) -----------------------------------------------------------------------


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _string_matcher(matcher: string_pb2.StringMatcher) -> Callable[[str], bool]:
    kind = matcher.WhichOneof("match_pattern")
    fold: Callable[[str], str] = (lambda s: s.lower()) if matcher.ignore_case else (lambda s: s)
    if kind == "exact":
        want = fold(matcher.exact)
        return lambda v: fold(v) == want
    if kind == "prefix":
        want = fold(matcher.prefix)
        return lambda v: fold(v).startswith(want)
    if kind == "suffix":
        want = fold(matcher.suffix)
        return lambda v: fold(v).endswith(want)
    if kind == "contains":
        want = fold(matcher.contains)
        return lambda v: want in fold(v)
    if kind == "safe_regex":
        return _regex(matcher.safe_regex.regex)
    return lambda v: False


def _regex(pattern: str) -> Callable[[str], bool]:
    try:
        compiled = re.compile(pattern)
    except re.error:
        return lambda v: False  # gRPC NACKs a bad regex; never match one
    return lambda v: compiled.fullmatch(v) is not None


def _header_matcher(header: route_components_pb2.HeaderMatcher) -> Callable[[dict[str, str]], bool]:
    """gRPC's HeaderMatcher::Match: an absent header matches only `present_match: false`;
    `invert_match` flips every result, present_match's included."""
    name = header.name.lower()
    kind = header.WhichOneof("header_match_specifier")
    invert = header.invert_match
    test: Callable[[str], bool]
    if kind == "present_match":
        want = header.present_match
        return lambda headers: ((name in headers) == want) != invert
    if kind == "exact_match":
        exact: str = header.exact_match
        test = lambda v: v == exact  # noqa: E731
    elif kind == "prefix_match":
        prefix: str = header.prefix_match
        test = lambda v: v.startswith(prefix)  # noqa: E731
    elif kind == "suffix_match":
        suffix: str = header.suffix_match
        test = lambda v: v.endswith(suffix)  # noqa: E731
    elif kind == "contains_match":
        contained: str = header.contains_match
        test = lambda v: contained in v  # noqa: E731
    elif kind == "safe_regex_match":
        test = _regex(header.safe_regex_match.regex)
    elif kind == "range_match":
        start, end = header.range_match.start, header.range_match.end

        def in_range(v: str) -> bool:
            try:
                return bool(start <= int(v) < end)
            except ValueError:
                return False
        test = in_range
    elif kind == "string_match":
        test = _string_matcher(header.string_match)
    else:
        return lambda headers: False

    def match(headers: dict[str, str]) -> bool:
        value = headers.get(name)
        return value is not None and test(value) != invert
    return match


def _path_matcher(match: route_components_pb2.RouteMatch) -> Callable[[str], bool]:
    kind = match.WhichOneof("path_specifier")
    sensitive = not match.HasField("case_sensitive") or match.case_sensitive.value
    fold: Callable[[str], str] = (lambda s: s) if sensitive else (lambda s: s.lower())
    if kind == "prefix":
        want = fold(match.prefix)
        return lambda path: fold(path).startswith(want)
    if kind == "path":
        want = fold(match.path)
        return lambda path: fold(path) == want
    if kind == "safe_regex":
        return _regex(match.safe_regex.regex)
    return lambda path: False  # connect_matcher, path_separated_prefix, ...: gRPC matches none


def _msd(options: route_components_pb2.RouteAction.MaxStreamDuration) -> float | None:
    """max_stream_duration as gRPC reads it (gRFC A31): grpc_timeout_header_max, else max_stream_duration."""
    if options.HasField("grpc_timeout_header_max"):
        return _seconds(options.grpc_timeout_header_max)
    if options.HasField("max_stream_duration"):
        return _seconds(options.max_stream_duration)
    return None


@dataclasses.dataclass(frozen=True)
class CompiledRoute:
    name: str
    path: Callable[[str], bool]
    headers: tuple[Callable[[dict[str, str]], bool], ...]
    timeout: float | None  # seconds; None: no route timeout

    def matches(self, method: str, headers: dict[str, str]) -> bool:
        return self.path(method) and all(match(headers) for match in self.headers)



Routes = tuple[CompiledRoute, ...]

def route_timeout(route: route_components_pb2.Route, default_msd: float | None = None) -> float | None:
    """The smaller of RouteAction.timeout and max_stream_duration (the route's, else the
    connection manager's `default_msd`), zero or unset meaning none; None for a route that
    does not forward (gRPC fails such calls itself)."""
    if route.WhichOneof("action") != "route":
        return None
    action = route.route
    candidates: list[float | None] = []
    if action.HasField("timeout"):
        candidates.append(_seconds(action.timeout))
    msd = _msd(action.max_stream_duration) if action.HasField("max_stream_duration") else None
    candidates.append(default_msd if msd is None else msd)
    positive = [c for c in candidates if c is not None and c > 0]
    return min(positive) if positive else None


def compile_routes(host: route_components_pb2.VirtualHost, default_msd: float | None = None) -> tuple[CompiledRoute, ...]:
    return tuple(
        CompiledRoute(route.name, _path_matcher(route.match), tuple(_header_matcher(h) for h in route.match.headers),
                      route_timeout(route, default_msd))
        for route in host.routes if not route.match.query_parameters)  # gRPC ignores those routes


def _domain_rank(domain: str, authority: str) -> tuple[int, int] | None:
    """gRFC A28's domain match: (kind, length), kind 3 exact, 2 suffix, 1 prefix wildcard, 0 `*`."""
    domain = domain.lower()
    if domain == "*":
        return (0, 1)
    if domain.startswith("*"):
        return (2, len(domain)) if authority.endswith(domain[1:]) else None
    if domain.endswith("*"):
        return (1, len(domain)) if authority.startswith(domain[:-1]) else None
    return (3, len(domain)) if domain == authority else None


def select_virtual_host(config: route_pb2.RouteConfiguration, authority: str) -> route_components_pb2.VirtualHost | None:
    authority = authority.lower()
    best, best_rank = None, None
    for host in config.virtual_hosts:
        for domain in host.domains:
            rank = _domain_rank(domain, authority)
            if rank is not None and (best_rank is None or rank > best_rank):
                best, best_rank = host, rank
    return best


def call_headers(metadata: Metadata) -> dict[str, str]:
    """What gRPC's header matchers see: one value per name, several joined by ","; no `-bin`."""
    headers: dict[str, str] = {"content-type": "application/grpc"}
    for key, value in metadata or ():
        key = key.lower()
        if key.endswith("-bin") or key == "content-type":
            continue
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


# ---- the process's xDS client config --------------------------------------------------------------


@dataclasses.dataclass
class _Dump:
    """One dump, parsed: resources by (type URL, name), and each target's routes once compiled."""

    raw: bytes
    resources: dict[tuple[str, str], csds_pb2.ClientConfig.GenericXdsConfig]
    routes: dict[str, Routes | None] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> _Dump:
        resources: dict[tuple[str, str], csds_pb2.ClientConfig.GenericXdsConfig] = {}
        for config in csds_pb2.ClientStatusResponse.FromString(raw).config:
            for resource in config.generic_xds_configs:
                key = (resource.type_url, resource.name)
                # the same name in several xDS clients (one per channel target): the one with contents
                if key not in resources or not resources[key].HasField("xds_config"):
                    resources[key] = resource
        return cls(raw, resources)

    def resource(self, type_url: str, name: str) -> any_pb2.Any | _Pending | None:
        """The resource's contents (the last ACKed version, also while a newer one is NACKed);
        None when gRPC says there is none; _PENDING when requested and not answered yet."""
        resource = self.resources.get((type_url, name))
        if resource is None:
            return _PENDING
        if resource.HasField("xds_config"):
            contents: any_pb2.Any = resource.xds_config
            return contents
        return None if resource.client_status in _GONE else _PENDING

    def routes_of(self, target: str) -> Routes | _Pending | None:
        if target in self.routes:
            return self.routes[target]
        routes = self._compile(target)
        if routes is not _PENDING:
            self.routes[target] = routes
        return routes

    def _compile(self, target: str) -> Routes | _Pending | None:
        packed = self.resource(LISTENER, target)
        if packed is None or packed is _PENDING:
            return packed
        listener = listener_pb2.Listener()
        manager = hcm_pb2.HttpConnectionManager()
        if not packed.Unpack(listener) or not listener.api_listener.api_listener.Unpack(manager):
            return None
        default_msd = None
        if manager.common_http_protocol_options.HasField("max_stream_duration"):
            default_msd = _seconds(manager.common_http_protocol_options.max_stream_duration)
        if manager.HasField("route_config"):
            config = manager.route_config
        else:
            packed = self.resource(ROUTE_CONFIGURATION, manager.rds.route_config_name)
            if packed is None or packed is _PENDING:
                return packed
            config = route_pb2.RouteConfiguration()
            if not packed.Unpack(config):
                return None
        host = select_virtual_host(config, target)
        return None if host is None else compile_routes(host, default_msd)


class _Snapshot:
    """The process's dump, re-read at most every REFRESH_SECONDS and parsed only when its bytes change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._dump = _Dump(b"", {})

    def routes(self, target: str, fresh: bool = False) -> Routes | _Pending | None:
        """The compiled routes of `target` (NAME:PORT, also the authority); None when gRPC has
        none for it (does not exist, rejected, no matching virtual host); _PENDING when not yet."""
        if fresh or time.monotonic() - self._read_at >= REFRESH_SECONDS:
            with self._lock:
                if fresh or time.monotonic() - self._read_at >= REFRESH_SECONDS:  # one thread reads
                    raw = cygrpc.dump_xds_configs()
                    self._read_at = time.monotonic()
                    if raw != self._dump.raw:
                        self._dump = _Dump.parse(raw)
        return self._dump.routes_of(target)


_snapshot = _Snapshot()


def _route_timeout_of(routes: Routes, method: str, metadata: Metadata) -> float | None:
    """The timeout of the first route the call matches; None without one (or when no route
    matches: gRPC fails the call, UNAVAILABLE)."""
    headers = call_headers(metadata)
    return next((route.timeout for route in routes if route.matches(method, headers)), None)


class RouteTimeouts:
    """The route timeouts of one channel to `xds:///NAME:PORT`."""

    def __init__(self, target: str, channel: grpc.Channel) -> None:
        self.target = target.removeprefix("xds:///")  # the listener's name and the authority
        self._channel = channel

    def bound(self, method: str, metadata: Metadata, timeout: float) -> float:
        """`timeout` (seconds from now) bounded by the timeout of the route this call takes."""
        started = time.monotonic()
        routes = _snapshot.routes(self.target)
        if routes is _PENDING:
            routes = self._wait(started + timeout)
        left = timeout - (time.monotonic() - started)
        if routes is None or routes is _PENDING or not routes:  # _PENDING: the call's time is up
            return left
        by_route = _route_timeout_of(routes, method, metadata)
        return left if by_route is None else min(left, by_route)

    def _wait(self, until: float) -> Routes | _Pending | None:
        """Hold a call on a channel that has no config yet, as gRPC does, until it has one."""
        routes: Routes | _Pending | None = _PENDING
        while routes is _PENDING and time.monotonic() < until:
            if self._state(try_to_connect=True) in (cygrpc.ConnectivityState.transient_failure,
                                                    cygrpc.ConnectivityState.shutdown):
                return None  # gRPC fails or queues the call on its own; nothing to bound
            time.sleep(WAIT_STEP)
            routes = _snapshot.routes(self.target, fresh=True)
        return routes

    def _state(self, try_to_connect: bool) -> int:
        # private grpcio API (what grpc.Channel.subscribe polls); an idle channel starts resolving
        state: int = cast(Any, self._channel)._channel.check_connectivity_state(try_to_connect)
        return state


class AioRouteTimeouts(grpc.aio.UnaryUnaryClientInterceptor):
    """The same bound for a `grpc.aio` channel to `xds:///NAME:PORT` (the gateway's): the call's
    timeout becomes the smaller of its own and its route's. A call made before the channel has its
    config is not held (asyncio must not block on the dump); gRPC holds it, unbounded by the route.
    Goes after header-adding interceptors, so that routes are chosen on the headers they add."""

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("xds:///")

    async def intercept_unary_unary(
            self, continuation: Callable[[grpc.aio.ClientCallDetails, _Request], Awaitable[_Call]],
            client_call_details: grpc.aio.ClientCallDetails, request: _Request) -> _Call:
        routes = _snapshot.routes(self.target)
        if routes is not None and routes is not _PENDING and routes:
            method = client_call_details.method
            method = method.decode() if isinstance(method, bytes) else method
            timeout = _route_timeout_of(routes, method, client_call_details.metadata)
            if timeout is not None:
                own = client_call_details.timeout
                client_call_details = replaced(client_call_details, timeout=timeout if own is None else min(own, timeout))
        return await continuation(client_call_details, request)
