// Entry point of the pricing service. Order matters: config and tracing are set up before any
// module that loads @grpc/grpc-js (those are required lazily below), so gRPC is instrumented.
import { ConfigError, loadConfig } from './runtime/config';
import { Logger } from './runtime/log';
import { setupTracing } from './runtime/tracing';
import { readPricingConfig } from './pricing/config';

export const DEFAULT_SERVICE_NAME = 'pricing';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env, DEFAULT_SERVICE_NAME, readPricingConfig);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\n');
      process.exit(2);
    }
    throw err;
  }
  const { mesh } = config;
  const logger = new Logger({ serviceName: mesh.serviceName, instanceId: mesh.instanceId, level: mesh.logLevel });
  const tracing = setupTracing(mesh);

  // Only now may grpc-js be loaded.
  const { MeshInstance } = await import('./runtime/instance');
  const { CatalogPriceSource } = await import('./pricing/catalog');
  const { pricingRegistration } = await import('./pricing/service');
  const { PROTO_INCLUDE_DIRS } = await import('./pricing/paths');

  const prices = CatalogPriceSource.overXds(config.service.catalogTarget);
  const instance = new MeshInstance({
    config: mesh,
    logger,
    tracing,
    language: 'typescript',
    services: [
      pricingRegistration({
        prices,
        logger,
        settings: { version: mesh.serviceVersion, promotionPercent: config.service.promotionPercent },
      }),
    ],
    reflection: { protoFiles: ['shop/pricing/v1/pricing.proto'], includeDirs: PROTO_INCLUDE_DIRS },
    close: () => prices.close(),
  });
  instance.installSignalHandlers();
  logger.info('starting', {
    'service.version': mesh.serviceVersion,
    promotion_percent: config.service.promotionPercent,
    catalog: config.service.catalogTarget,
  });
  try {
    await instance.start();
  } catch (err) {
    if (instance.shuttingDown) return; // a signal arrived during start; its handler exits 0
    logger.error('start failed', { error: err });
    await instance.shutdown('start failed');
    process.exit(1);
  }
}

void main().catch((err: unknown) => {
  process.stderr.write(`fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
