package mesh

import (
	"context"
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/stats"
)

// SetupTracing installs a global tracer provider (batch export over OTLP/gRPC, or none) and the W3C
// propagator. The returned function flushes and shuts the provider down.
func SetupTracing(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.version", cfg.ServiceVersion),
		attribute.String("service.instance.id", cfg.InstanceID),
	))
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.TracesExporter == "otlp" {
		// The exporter connects lazily: a missing collector costs dropped spans, not a failed start.
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(cfg.OTLPEndpoint))
		if err != nil {
			return nil, fmt.Errorf("OTLP exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}

// UntracedServices are the admin services whose calls make no spans (health checks every second
// would bury the traces), matched by full service name as in every runtime.
var UntracedServices = []string{
	"grpc.health.v1.Health",
	"grpc.reflection.v1.ServerReflection",
	"grpc.reflection.v1alpha.ServerReflection",
	"envoy.service.status.v3.ClientStatusDiscoveryService",
	"grpc.channelz.v1.Channelz",
}

var recordedRPCs = func() otelgrpc.Filter {
	untraced := make([]otelgrpc.Filter, 0, len(UntracedServices))
	for _, name := range UntracedServices {
		untraced = append(untraced, filters.ServiceName(name))
	}
	return filters.None(untraced...)
}()

// ServerStatsHandler is the OpenTelemetry handler for servers (global provider and propagator).
func ServerStatsHandler() stats.Handler {
	return otelgrpc.NewServerHandler(otelgrpc.WithFilter(recordedRPCs))
}

// ClientStatsHandler is the OpenTelemetry handler for clients (global provider and propagator).
func ClientStatsHandler() stats.Handler {
	return otelgrpc.NewClientHandler(otelgrpc.WithFilter(recordedRPCs))
}
