// OpenTelemetry: NodeTracerProvider, OTLP/gRPC batch export, W3C propagation, gRPC instrumentation.
// setupTracing() must run before anything loads @grpc/grpc-js: the instrumentation patches the module
// when it is first required, and a module loaded earlier stays unpatched (no spans, no traceparent).
import { propagation, type Attributes, type Context, type Link, type SpanKind } from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  SamplingDecision,
  type Sampler,
  type SamplingResult,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { MeshConfig } from './config';

// Not in the stable semantic-conventions entry point yet.
const ATTR_SERVICE_INSTANCE_ID = 'service.instance.id';

/**
 * Services whose calls are not traced, matched by full service name (docs/runtime-contract.md,
 * "Tracing"), plus the xDS client's own long-lived streams (ADS, LRS), which are not calls of
 * the service at all.
 */
export const UNTRACED_GRPC_SERVICES: readonly string[] = Object.freeze([
  'grpc.health.v1.Health',
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
  'envoy.service.status.v3.ClientStatusDiscoveryService',
  'grpc.channelz.v1.Channelz',
  'envoy.service.discovery.v3.AggregatedDiscoveryService',
  'envoy.service.load_stats.v3.LoadReportingService',
]);

/**
 * instrumentation-grpc's own filter sees only the method name (never the service) on the server
 * side, so the match by service is a sampler: it sees the span name, `grpc.SERVICE/METHOD`, for
 * client and server spans alike. Everything else follows the parent (root: sampled).
 */
export class UntracedServicesSampler implements Sampler {
  private readonly names: ReadonlySet<string>;
  private readonly delegate = new ParentBasedSampler({ root: new AlwaysOnSampler() });

  constructor(services: readonly string[] = UNTRACED_GRPC_SERVICES) {
    this.names = new Set(services.map((s) => `grpc.${s}`));
  }

  shouldSample(context: Context, traceId: string, spanName: string, spanKind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    const slash = spanName.indexOf('/');
    if (slash > 0 && this.names.has(spanName.slice(0, slash))) return { decision: SamplingDecision.NOT_RECORD };
    return this.delegate.shouldSample(context, traceId, spanName, spanKind, attributes, links);
  }

  toString(): string {
    return 'UntracedServicesSampler';
  }
}

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
    sampler: new UntracedServicesSampler(),
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
    instrumentations: [new GrpcInstrumentation()],
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
