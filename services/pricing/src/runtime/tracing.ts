// OpenTelemetry: NodeTracerProvider, OTLP/gRPC batch export, W3C propagation, gRPC instrumentation.
// setupTracing() must run before anything loads @grpc/grpc-js: the instrumentation patches the module
// when it is first required, and a module loaded earlier stays unpatched (no spans, no traceparent).
import { propagation } from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { MeshConfig } from './config';

// Not in the stable semantic-conventions entry point yet.
const ATTR_SERVICE_INSTANCE_ID = 'service.instance.id';

/**
 * RPCs whose spans are not recorded. instrumentation-grpc matches the method name only (it never
 * sees the service), so these are the method names of grpc.health.v1.Health, server reflection
 * (v1 and v1alpha) and the xDS client's own long-lived streams (ADS, LRS).
 */
export const UNTRACED_GRPC_METHODS: readonly string[] = Object.freeze([
  'Check',
  'Watch',
  'List',
  'ServerReflectionInfo',
  'StreamAggregatedResources',
  'StreamLoadStats',
]);

export interface Tracing {
  readonly provider: NodeTracerProvider;
  /** Exports what is buffered, then stops; safe to call more than once. */
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** Extra processors, e.g. an in-memory exporter in tests. */
  spanProcessors?: SpanProcessor[];
}

function grpcAlreadyLoaded(): boolean {
  return Object.keys(require.cache).some((file) => /[\\/]@grpc[\\/]grpc-js[\\/]/.test(file));
}

export function setupTracing(config: MeshConfig, options: TracingOptions = {}): Tracing {
  if (grpcAlreadyLoaded()) {
    throw new Error('setupTracing() must run before @grpc/grpc-js is loaded');
  }
  const processors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
  if (config.tracesExporter === 'otlp') {
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: config.otlpEndpoint })));
  }
  const provider = new NodeTracerProvider({
    resource: defaultResource().merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: config.serviceName,
        [ATTR_SERVICE_VERSION]: config.serviceVersion,
        [ATTR_SERVICE_INSTANCE_ID]: config.instanceId,
      }),
    ),
    spanProcessors: processors,
  });
  // The provider is registered even with OTEL_TRACES_EXPORTER=none: ids still reach logs and
  // traceparent still propagates to the next hop.
  provider.register({
    propagator: new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    }),
  });
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [new GrpcInstrumentation({ ignoreGrpcMethods: [...UNTRACED_GRPC_METHODS] })],
  });
  let stopping: Promise<void> | undefined;
  return {
    provider,
    shutdown() {
      stopping ??= provider.shutdown().finally(() => propagation.disable());
      return stopping;
    },
  };
}
