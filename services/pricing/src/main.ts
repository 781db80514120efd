// Entry point of the pricing service: the runtime does the rest (docs/runtime-contract.md). Only
// `@polymesh/runtime/run` is imported here; the service's modules load grpc-js, so they are
// required inside setup, after tracing is set up.
import { runService } from '@polymesh/runtime/run';
import { readPricingConfig } from './pricing/config';

runService({
  name: 'pricing',
  readConfig: readPricingConfig,
  describe: (settings) => ({ promotion_percent: settings.promotionPercent }),
  setup: async (env) => (await import('./pricing/setup')).setup(env),
});
