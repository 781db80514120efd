// Server process: node server.mjs <config> <otlp endpoint> <service name> <warm-up s>
// A plain grpc-js server on 127.0.0.1:0 with a trivial unary CatalogService.GetProduct, traced as
// pricing traces (setupTracing() of mesh/runtime-ts/src/tracing.ts, before grpc-js is
// loaded). Prints `PORT n` once listening; measures its own event-loop delay from warm-up s after
// the first call (so the exporter's one-off start, module loading and JIT, is not counted); on SIGTERM stops the server, shuts the tracer provider
// down (which flushes) and prints one JSON line of stats.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { CATALOG_GEN, TRACING, requirePricing } from './common.mjs';

const [config, endpoint, serviceName, warmupS] = process.argv.slice(2);
const warmupMs = Number(warmupS) * 1000;
const meshConfig = (exporter) => ({
  serviceName,
  serviceVersion: 'v1',
  instanceId: `${serviceName}-1`,
  tracesExporter: exporter,
  otlpEndpoint: endpoint,
});

let tracing;
let processor;
if (config !== 'none') {
  const { setupTracing } = requirePricing(TRACING);
  if (config === 'noexport') {
    // The provider, propagation and gRPC instrumentation, no span processor.
    tracing = setupTracing(meshConfig('none'));
  } else if (config === 'sdk') {
    // What setupTracing() wires with OTEL_TRACES_EXPORTER=otlp: BatchSpanProcessor + OTLP/gRPC exporter.
    const { BatchSpanProcessor } = requirePricing('@opentelemetry/sdk-trace-base');
    const { OTLPTraceExporter } = requirePricing('@opentelemetry/exporter-trace-otlp-grpc');
    processor = new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }));
    tracing = setupTracing(meshConfig('none'), { spanProcessors: [processor] });
  } else {
    throw new Error(`unknown config ${config}`);
  }
}

const grpc = requirePricing('@grpc/grpc-js');
const catalog = requirePricing(CATALOG_GEN);
const product = { id: 'sku-espresso-cup', name: 'Espresso cup', description: '', priceUsd: { currencyCode: 'USD', units: 12, nanos: 0 } };
const server = new grpc.Server();
server.addService(catalog.CatalogServiceService, {
  getProduct: (_call, callback) => {
    if (firstCall === undefined) {
      firstCall = performance.now();
      setTimeout(() => { eld.reset(); eld.enable(); }, warmupMs).unref();
    }
    callback(null, { product });
  },
  listProducts: (_call, callback) => callback({ code: grpc.status.UNIMPLEMENTED }),
  batchGetProducts: (_call, callback) => callback({ code: grpc.status.UNIMPLEMENTED }),
});
const eld = monitorEventLoopDelay({ resolution: 1 });
let firstCall;
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`PORT ${port}\n`);
});

process.once('SIGTERM', async () => {
  eld.disable();
  await new Promise((resolve) => server.tryShutdown(resolve));
  const started = performance.now();
  if (tracing) await tracing.shutdown();
  const stats = {
    shutdown_seconds: Number(((performance.now() - started) / 1000).toFixed(3)),
    event_loop_delay_p99_ms: eld.percentile(99) / 1e6,
    event_loop_delay_max_ms: eld.max / 1e6,
  };
  if (processor && typeof processor.droppedSpans === 'number') stats.dropped_spans = processor.droppedSpans;
  process.stdout.write(JSON.stringify(stats) + '\n');
  process.exit(0);
});
