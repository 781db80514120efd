"""OpenTelemetry for a mesh instance: SDK, OTLP export, W3C context, gRPC interceptors.

Health checks and reflection are excluded from tracing: the Consul agent checks every instance
every second, and those spans would bury the requests people come to Jaeger for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    client_interceptor,
    filters,
    grpcext,
    server_interceptor,
)
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mesh.runtime.config import InstanceConfig
from mesh.runtime.export import ChildProcessSpanProcessor

__all__ = ["aio_traced_interceptors", "setup_tracing", "traced_channel", "traced_server_interceptors"]

log = logging.getLogger(__name__)

# The admin port's services (docs/runtime-contract.md, "Tracing"), matched by full service name.
UNTRACED_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
    "envoy.service.status.v3.ClientStatusDiscoveryService",
    "grpc.channelz.v1.Channelz",
)


def _rpc_filter() -> Callable[[Any], bool]:
    rpc_filter: Callable[[Any], bool] = filters.negate(
        filters.any_of(*(filters.service_name(name) for name in UNTRACED_SERVICES)))
    return rpc_filter


def setup_tracing(config: InstanceConfig, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the global tracer provider. `exporter` overrides OTLP (tests pass an in-memory one)."""
    resource = Resource.create(
        {
            "service.name": config.service_name,
            "service.version": config.service_version,
            "service.instance.id": config.instance_id,
        }
    )
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    elif config.traces_exporter == "otlp":
        # OTLP encoding runs in a child process, off this process's GIL (mesh/runtime/export.py).
        provider.add_span_processor(
            ChildProcessSpanProcessor(provider.resource, config.otlp_endpoint, insecure=True, log_level=config.log_level)
        )
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    return provider


def traced_server_interceptors() -> list[grpc.ServerInterceptor]:
    return [server_interceptor(filter_=_rpc_filter())]


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    # The instrumentation's client interceptor has its own interface, wired in by grpcext.
    traced: grpc.Channel = grpcext.intercept_channel(channel, client_interceptor(filter_=_rpc_filter()))
    return traced


def aio_traced_interceptors() -> list[grpc.aio.ClientInterceptor]:
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(filter_=_rpc_filter())
    return interceptors
