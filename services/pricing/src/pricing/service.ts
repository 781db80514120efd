// shop.pricing.v1.PricingService: quotes catalog base prices (USD) in a customer's currency.
import { status as Code } from '@grpc/grpc-js';
import { defineService, invalidArgument, ServiceError, type FieldViolation, type ServiceRegistration } from '@polymesh/runtime';
import type { Money } from '../../../../gen/ts/google/type/money';
import {
  PricingServiceService,
  type GetQuoteRequest,
  type GetQuoteResponse,
  type QuoteLine,
} from '../../../../gen/ts/shop/pricing/v1/pricing';
import type { PriceSource } from './catalog';
import { CURRENCIES, currencyCodes } from './currencies';
import { moneyToNanos, nanosToMoney, unitPriceNanos } from './money';

export interface PricingSettings {
  /** MESH_SERVICE_VERSION, stamped on every quote. */
  version: string;
  /** PRICING_PROMOTION_PERCENT, 0-100. */
  promotionPercent: number;
}

/** Every problem with the request, as google.rpc.BadRequest field violations. */
export function validateQuoteRequest(request: GetQuoteRequest): FieldViolation[] {
  const violations: FieldViolation[] = [];
  if (request.items.length === 0) {
    violations.push({ field: 'items', description: 'at least one item is required' });
  }
  request.items.forEach((item, i) => {
    if (item.productId === '') {
      violations.push({ field: `items[${i}].product_id`, description: 'a product id is required' });
    }
    if (item.quantity < 1) {
      violations.push({ field: `items[${i}].quantity`, description: `must be at least 1, got ${item.quantity}` });
    }
  });
  if (request.currencyCode === '') {
    violations.push({ field: 'currency_code', description: 'a currency code is required' });
  } else if (!CURRENCIES.has(request.currencyCode)) {
    violations.push({
      field: 'currency_code',
      description: `unknown currency ${JSON.stringify(request.currencyCode)}; supported: ${currencyCodes().join(', ')}`,
    });
  }
  return violations;
}

/** Money from nanos; an amount too large for Money.units is the caller's OUT_OF_RANGE. */
function toMoney(currencyCode: string, nanos: bigint): Money {
  try {
    return nanosToMoney(currencyCode, nanos);
  } catch (err) {
    if (err instanceof RangeError) throw new ServiceError(Code.OUT_OF_RANGE, 'quote amount is too large to represent');
    throw err;
  }
}

export async function getQuote(
  request: GetQuoteRequest,
  prices: PriceSource,
  settings: PricingSettings,
): Promise<GetQuoteResponse> {
  const violations = validateQuoteRequest(request);
  if (violations.length > 0) throw invalidArgument(violations);
  const currency = CURRENCIES.get(request.currencyCode)!;
  const basePrices = await prices.basePricesUsd(request.items.map((item) => item.productId));
  let total = 0n;
  const lines: QuoteLine[] = request.items.map((item, i) => {
    const unit = unitPriceNanos(moneyToNanos(basePrices[i]), currency, settings.promotionPercent);
    const lineTotal = unit * BigInt(item.quantity);
    total += lineTotal;
    return {
      productId: item.productId,
      quantity: item.quantity,
      unitPrice: toMoney(currency.code, unit),
      lineTotal: toMoney(currency.code, lineTotal),
    };
  });
  const totalMoney = toMoney(currency.code, total);
  return {
    quote: {
      lines,
      total: totalMoney,
      pricingVersion: settings.version,
      promotionPercent: settings.promotionPercent,
    },
  };
}

/** shop.pricing.v1.PricingService for the runtime to serve. */
export function pricingService(prices: PriceSource, settings: PricingSettings): ServiceRegistration {
  return defineService(PricingServiceService, {
    getQuote: (request) => getQuote(request, prices, settings),
    listCurrencies: async () => ({ currencyCodes: currencyCodes() }),
  });
}
