"""Istio's per-route and per-cluster traffic policy -> the xDS fields proxyless gRPC clients read.

Per route (VirtualService `http[]`), as istiod's route translation sends them:
- `retries` -> `RouteAction.retry_policy`. A route without `retries` gets istiod's default policy
  (2 retries on `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`);
  `attempts: 0` turns retries off. gRPC reads only the gRPC code names in `retry_on`
  (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable), caps attempts at 5
  and has no per-try timeout (gRFC A44): `mesh.xds.istio` warns about what it drops.
- `timeout` -> `RouteAction.timeout` and `max_stream_duration` (gRPC ignores the first; the second
  ends the call, streams included). grpcio fires `max_stream_duration` too early (grpc/grpc#34547),
  so a C-core client gets the timeout in `RouteAction.timeout` only, and the Python runtime applies
  it as the call's own deadline (`exact_timeouts=False`).
- `fault` -> the route's `typed_per_filter_config` for the fault filter, which every client
  listener carries (empty) before the router, as istiod's proxyless listeners do.

Per cluster (DestinationRule `trafficPolicy`, merged with the subset's), beyond istiod's proxyless
generator (which sends neither; the comparison with istiod says so):
- `outlierDetection` -> gRPC's failure-percentage ejection (gRPC has no consecutive-errors
  algorithm, gRFC A50): a host that failed more than `FAILURE_THRESHOLD` percent of at least
  `consecutive5xxErrors` (or `consecutiveGatewayErrors`, the smaller; Envoy's default 5) calls in
  an `interval` is ejected for `baseEjectionTime`, at most `maxEjectionPercent` of the hosts.
  `enforcing_success_rate: 0` always: grpc-js-xds crashes on an outlier detection without it.
- `connectionPool.http.http2MaxRequests` -> `circuit_breakers` max_requests: calls beyond it
  fail at once with UNAVAILABLE instead of queueing.
"""

from __future__ import annotations

import hashlib

from envoy.config.cluster.v3 import circuit_breaker_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2
from istio.networking.v1alpha3 import destination_rule_pb2, virtual_service_pb2

__all__ = ["DEFAULT_RETRY_ON", "FAILURE_THRESHOLD", "FAULT_FILTER", "GRPC_CODES", "GRPC_RETRY_ON", "MAX_ATTEMPTS",
           "RETRY_CONDITIONS", "apply_route_policy", "circuit_breakers", "fault_filter_name", "http_fault",
           "outlier_detection", "retry_policy"]

FAULT_FILTER = "envoy.filters.http.fault"
DEFAULT_RETRIES = 2  # istiod's default policy
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
GRPC_RETRY_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
# What Istio's validation accepts in retryOn besides HTTP status codes.
RETRY_CONDITIONS = (*GRPC_RETRY_ON, "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
                    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
                    "retriable-headers", "http3-post-connect-failure")
MAX_ATTEMPTS = 5  # gRPC's cap on attempts (the first call and its retries)
GRPC_CODES = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
              "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
              "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
              "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
FAILURE_THRESHOLD = 85  # percent of failed calls that ejects a host (gRPC's own default)
ENVOY_CONSECUTIVE_DEFAULT = 5
ISTIO_INTERVAL = duration_pb2.Duration(seconds=10)
ISTIO_BASE_EJECTION_TIME = duration_pb2.Duration(seconds=30)
ISTIO_MAX_EJECTION_PERCENT = 10


def _fraction(percent: float) -> percent_pb2.FractionalPercent:
    """Istio's percentage (a double, 0-100) as istiod sends it: parts per million."""
    return percent_pb2.FractionalPercent(numerator=round(percent * 10000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def retry_policy(retries: virtual_service_pb2.HTTPRetry | None) -> route_components_pb2.RetryPolicy | None:
    """istiod's ConvertPolicy: the default policy without `retries`, none for `attempts: 0`."""
    out = route_components_pb2.RetryPolicy(retry_on=DEFAULT_RETRY_ON, retriable_status_codes=[503])
    out.num_retries.value = DEFAULT_RETRIES
    if retries is None:
        return out
    if retries.attempts <= 0:
        return None
    out.num_retries.value = retries.attempts
    if retries.retry_on:
        conditions = [c.strip() for c in retries.retry_on.split(",") if c.strip()]
        codes = [int(c) for c in conditions if c.isdigit()]
        names = [c for c in conditions if not c.isdigit()]
        if codes and "retriable-status-codes" not in names:
            names.append("retriable-status-codes")
        out.retry_on = ",".join(names)
        del out.retriable_status_codes[:]
        out.retriable_status_codes.extend(codes)
    if retries.HasField("per_try_timeout"):
        out.per_try_timeout.CopyFrom(retries.per_try_timeout)
    if retries.HasField("backoff"):
        out.retry_back_off.base_interval.CopyFrom(retries.backoff)
    return out


def http_fault(fault: virtual_service_pb2.HTTPFaultInjection) -> fault_pb2.HTTPFault:
    """istiod's translateFault: a fixed delay and an abort (gRPC status or HTTP status), each with
    its percentage (unset: the field is left out, as istiod leaves it)."""
    out = fault_pb2.HTTPFault()
    if fault.HasField("delay"):
        out.delay.fixed_delay.CopyFrom(fault.delay.fixed_delay)
        if fault.delay.HasField("percentage"):
            out.delay.percentage.CopyFrom(_fraction(fault.delay.percentage.value))
        elif fault.delay.percent:
            out.delay.percentage.CopyFrom(_fraction(fault.delay.percent))
    if fault.HasField("abort"):
        kind = fault.abort.WhichOneof("error_type")
        if kind == "grpc_status":
            out.abort.grpc_status = GRPC_CODES[fault.abort.grpc_status]
        elif kind == "http_status":
            out.abort.http_status = fault.abort.http_status
        if fault.abort.HasField("percentage"):
            out.abort.percentage.CopyFrom(_fraction(fault.abort.percentage.value))
    return out


def fault_filter_name(virtual_service: virtual_service_pb2.VirtualService | None) -> str:
    """The fault filter's instance name on a service's client listeners and in its routes' per-filter
    config: `envoy.filters.http.fault`, suffixed with a digest of the service's faults when it has
    any. grpcio keeps applying the first per-route fault config it saw on a filter instance when only
    its values change (measured: a 100% abort edited to 0% stayed 100%); a new instance name for new
    faults makes every client take them."""
    faults = [http.fault.SerializeToString(deterministic=True) for http in
              (virtual_service.http if virtual_service is not None else ()) if http.HasField("fault")]
    if not faults:
        return FAULT_FILTER
    return f"{FAULT_FILTER}.{hashlib.sha256(b'/'.join(faults)).hexdigest()[:12]}"


def apply_route_policy(route: route_components_pb2.Route, http: virtual_service_pb2.HTTPRoute | None,
                       exact_timeouts: bool, fault_filter: str = FAULT_FILTER) -> None:
    """Retries, timeout and fault of one VirtualService http route (None: the default route)."""
    action = route.route
    policy = retry_policy(http.retries if http is not None and http.HasField("retries") else None)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    if http is None:
        return
    if http.HasField("timeout"):
        action.timeout.CopyFrom(http.timeout)
        if exact_timeouts:
            action.max_stream_duration.max_stream_duration.CopyFrom(http.timeout)
    if http.HasField("fault"):
        route.typed_per_filter_config[fault_filter].Pack(http_fault(http.fault))


def outlier_detection(policy: destination_rule_pb2.OutlierDetection) -> outlier_detection_pb2.OutlierDetection | None:
    """Istio's outlierDetection as gRPC's failure-percentage ejection; None when both consecutive
    error counts are explicitly 0 (nothing would ever eject)."""
    counts = []
    for field in ("consecutive_5xx_errors", "consecutive_gateway_errors"):
        if policy.HasField(field):
            counts.append(getattr(policy, field).value)
    if policy.consecutive_errors:
        counts.append(policy.consecutive_errors)
    volume = min((c for c in counts if c > 0), default=0) if counts else ENVOY_CONSECUTIVE_DEFAULT
    if volume == 0:
        return None
    out = outlier_detection_pb2.OutlierDetection()
    out.interval.CopyFrom(policy.interval if policy.HasField("interval") else ISTIO_INTERVAL)
    out.base_ejection_time.CopyFrom(policy.base_ejection_time if policy.HasField("base_ejection_time")
                                    else ISTIO_BASE_EJECTION_TIME)
    out.max_ejection_percent.value = policy.max_ejection_percent or ISTIO_MAX_EJECTION_PERCENT
    out.enforcing_success_rate.value = 0  # success-rate ejection off; grpc-js-xds needs the field
    out.failure_percentage_threshold.value = FAILURE_THRESHOLD
    out.enforcing_failure_percentage.value = 100
    out.failure_percentage_minimum_hosts.value = 1
    out.failure_percentage_request_volume.value = volume
    return out


def circuit_breakers(pool: destination_rule_pb2.ConnectionPoolSettings) -> circuit_breaker_pb2.CircuitBreakers | None:
    if pool.http.http2_max_requests <= 0:
        return None
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    threshold.max_requests.value = pool.http.http2_max_requests
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[threshold])
