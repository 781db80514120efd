// What the runtime serves for pricing: PricingService over a catalog client from dial().
import type { ServiceEnv, ServiceSetup } from '@polymesh/runtime';
import { CatalogServiceClient } from '../../../../gen/ts/shop/catalog/v1/catalog';
import { CatalogPriceSource } from './catalog';
import type { PricingConfig } from './config';
import { pricingService } from './service';

export async function setup(env: ServiceEnv<PricingConfig>): Promise<ServiceSetup> {
  const prices = new CatalogPriceSource(env.dialer.dial(CatalogServiceClient, 'catalog'), env.config.serviceName);
  return {
    services: [pricingService(prices, { version: env.config.serviceVersion, promotionPercent: env.settings.promotionPercent })],
    protoFiles: ['shop/pricing/v1/pricing.proto'],
  };
}
