// Pricing's own variables, read with the runtime's EnvReader so one error line names every bad one.
import type { EnvReader } from '@polymesh/runtime/run';

export const PRICING_DEFAULTS = Object.freeze({
  /** Percent off every unit price; the local runner sets 10 for v2. */
  PRICING_PROMOTION_PERCENT: 0,
});

export interface PricingConfig {
  readonly promotionPercent: number;
}

export function readPricingConfig(r: EnvReader): PricingConfig {
  return {
    promotionPercent: r.integer('PRICING_PROMOTION_PERCENT', PRICING_DEFAULTS.PRICING_PROMOTION_PERCENT, 0, 100),
  };
}
