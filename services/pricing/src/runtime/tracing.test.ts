// Tracing end to end in one process: set up before grpc-js is loaded (so nothing here imports it
// statically), spans for client -> pricing -> catalog share one trace via W3C traceparent, health
// RPCs are not recorded, and error logs carry the server span's trace id.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { MeshConfig } from './config';
import { setupTracing, type Tracing } from './tracing';

const exporter = new InMemorySpanExporter();
let tracing: Tracing;

const config = {
  serviceName: 'pricing',
  serviceVersion: 'v2',
  instanceId: 'pricing-trace-test',
  tracesExporter: 'none',
  otlpEndpoint: 'http://127.0.0.1:4317',
} as MeshConfig;

before(() => {
  tracing = setupTracing(config, { spanProcessors: [new SimpleSpanProcessor(exporter)] });
});
after(async () => {
  await tracing.shutdown();
});

test('setupTracing refuses to run after grpc-js was loaded', async () => {
  await import('@grpc/grpc-js');
  assert.throws(() => setupTracing(config), /before @grpc\/grpc-js is loaded/);
});

test('one trace across client, pricing and catalog; health untraced; logs carry the trace id', async () => {
  const grpc = await import('@grpc/grpc-js');
  const { Logger } = await import('./log');
  const { bindAsync } = await import('./net');
  const { startAdminServer } = await import('./admin');
  const { PROTO_INCLUDE_DIRS } = await import('../pricing/paths');
  const { CatalogPriceSource } = await import('../pricing/catalog');
  const { createPricingService } = await import('../pricing/service');
  const catalogGen = await import('../../../../gen/ts/shop/catalog/v1/catalog');
  const pricingGen = await import('../../../../gen/ts/shop/pricing/v1/pricing');
  const { service: healthService } = await import('grpc-health-check');

  const lines: Record<string, unknown>[] = [];
  const logger = new Logger({
    serviceName: 'pricing',
    instanceId: 'pricing-trace-test',
    level: 'info',
    write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>),
  });
  const servers: InstanceType<typeof grpc.Server>[] = [];
  const serve = async (def: import('@grpc/grpc-js').ServiceDefinition, impl: import('@grpc/grpc-js').UntypedServiceImplementation) => {
    const s = new grpc.Server();
    s.addService(def, impl);
    servers.push(s);
    return `127.0.0.1:${await bindAsync(s, '127.0.0.1:0', grpc.ServerCredentials.createInsecure())}`;
  };
  const catalogAddress = await serve(catalogGen.CatalogServiceService, {
    batchGetProducts: (call: any, cb: any) =>
      cb(null, {
        products: call.request.ids.map((id: string) => ({ id, name: id, description: '', priceUsd: { currencyCode: 'USD', units: 1, nanos: 0 } })),
      }),
    listProducts: (_c: any, cb: any) => cb({ code: grpc.status.UNIMPLEMENTED }),
    getProduct: (_c: any, cb: any) => cb({ code: grpc.status.UNIMPLEMENTED }),
  });
  const prices = CatalogPriceSource.direct(catalogAddress);
  const settings = { version: 'v2', promotionPercent: 10 };
  const okAddress = await serve(pricingGen.PricingServiceService, createPricingService({ prices, logger, settings }));
  const brokenAddress = await serve(
    pricingGen.PricingServiceService,
    createPricingService({ prices: { basePricesUsd: () => Promise.reject(new Error('boom')), close: () => undefined }, logger, settings }),
  );
  const admin = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    serviceNames: ['shop.pricing.v1.PricingService'],
    reflection: { protoFiles: ['shop/pricing/v1/pricing.proto'], includeDirs: PROTO_INCLUDE_DIRS },
  });

  const request = { currencyCode: 'USD', items: [{ productId: 'sku-a', quantity: 1 }] };
  const quote = (address: string) => {
    const client = new pricingGen.PricingServiceClient(address, grpc.credentials.createInsecure());
    return new Promise<import('@grpc/grpc-js').ServiceError | null>((resolve) =>
      client.getQuote(request, (err) => {
        client.close();
        resolve(err);
      }),
    );
  };
  assert.equal(await quote(okAddress), null);
  assert.equal((await quote(brokenAddress))?.code, grpc.status.INTERNAL);

  const Health = grpc.makeClientConstructor(healthService, 'grpc.health.v1.Health');
  const health = new Health(`127.0.0.1:${admin.port}`, grpc.credentials.createInsecure()) as any;
  await new Promise((resolve) => health.check({ service: '' }, resolve));
  health.close();

  const spans = exporter.getFinishedSpans();
  const byName = (name: string) => spans.filter((s) => s.name === name);
  const serverQuote = byName('grpc.shop.pricing.v1.PricingService/GetQuote').filter((s) => s.kind === 1);
  const clientQuote = byName('grpc.shop.pricing.v1.PricingService/GetQuote').filter((s) => s.kind === 2);
  const catalogSpans = byName('grpc.shop.catalog.v1.CatalogService/BatchGetProducts');
  assert.equal(serverQuote.length, 2);
  assert.equal(clientQuote.length, 2);
  assert.equal(catalogSpans.length, 2, 'catalog client and server spans');
  const traceId = clientQuote[0].spanContext().traceId;
  for (const s of [serverQuote[0], ...catalogSpans]) assert.equal(s.spanContext().traceId, traceId, s.name);
  assert.equal(serverQuote[0].parentSpanContext?.spanId, clientQuote[0].spanContext().spanId);
  assert.ok(!spans.some((s) => s.name.includes('grpc.health.v1.Health')), 'health RPCs are not recorded');
  assert.equal(serverQuote[0].resource.attributes['service.name'], 'pricing');
  assert.equal(serverQuote[0].resource.attributes['service.version'], 'v2');
  assert.equal(serverQuote[0].resource.attributes['service.instance.id'], 'pricing-trace-test');

  const logged = lines.find((l) => l.message === 'unexpected error');
  assert.ok(logged);
  assert.equal(logged.trace_id, serverQuote[1].spanContext().traceId);
  assert.equal(logged.span_id, serverQuote[1].spanContext().spanId);

  prices.close();
  admin.server.forceShutdown();
  for (const s of servers) s.forceShutdown();
});
