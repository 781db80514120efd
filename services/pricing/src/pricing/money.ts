// Exact money arithmetic on google.type.Money: amounts are BigInt nanos (1e-9 of a unit), never
// floats. A unit price is converted and discounted in one exact rational step and rounded once,
// half up (away from zero), to the currency's minor unit.
import type { Money } from '../../../../gen/ts/google/type/money';
import type { Currency } from './currencies';

export const NANOS_PER_UNIT = 1_000_000_000n;
const MAX_NANOS = 999_999_999;

/** "151.37" -> 151_370_000_000n. */
export function decimalToNanos(decimal: string): bigint {
  const match = /^(\d+)(?:\.(\d{1,9}))?$/.exec(decimal);
  if (!match) throw new RangeError(`not a non-negative decimal with at most 9 fractional digits: ${decimal}`);
  return BigInt(match[1]) * NANOS_PER_UNIT + BigInt((match[2] ?? '').padEnd(9, '0'));
}

export function moneyToNanos(money: Money): bigint {
  const { units, nanos } = money;
  if (!Number.isSafeInteger(units)) throw new RangeError(`money units not a safe integer: ${units}`);
  if (!Number.isInteger(nanos) || Math.abs(nanos) > MAX_NANOS) throw new RangeError(`money nanos out of range: ${nanos}`);
  if ((units > 0 && nanos < 0) || (units < 0 && nanos > 0)) {
    throw new RangeError(`money units and nanos have different signs: ${units}, ${nanos}`);
  }
  return BigInt(units) * NANOS_PER_UNIT + BigInt(nanos);
}

export function nanosToMoney(currencyCode: string, amount: bigint): Money {
  // BigInt division truncates toward zero, so units and nanos keep the same sign as Money requires.
  const units = amount / NANOS_PER_UNIT;
  const nanos = amount % NANOS_PER_UNIT;
  // gen/ts is generated with forceLong=number: units beyond 2^53 cannot be represented.
  if (units > BigInt(Number.MAX_SAFE_INTEGER) || units < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new RangeError(`amount too large for Money.units: ${amount} nanos`);
  }
  return { currencyCode, units: Number(units), nanos: Number(nanos) };
}

/** numerator / denominator rounded half away from zero (denominator > 0). */
export function divideRoundHalfUp(numerator: bigint, denominator: bigint): bigint {
  if (denominator <= 0n) throw new RangeError('denominator must be > 0');
  const negative = numerator < 0n;
  const magnitude = negative ? -numerator : numerator;
  const rounded = (2n * magnitude + denominator) / (2n * denominator);
  return negative ? -rounded : rounded;
}

/** Size of the currency's minor unit in nanos: 10_000_000n for cents, 1e9 for yen. */
export function minorUnitNanos(currency: Currency): bigint {
  return 10n ** BigInt(9 - currency.minorUnitDigits);
}

/**
 * The unit price in `currency` of a USD price, less `promotionPercent` percent, rounded half up to
 * the currency's minor unit: round(usd * perUsd * (100 - p) / 100).
 */
export function unitPriceNanos(usdNanos: bigint, currency: Currency, promotionPercent: number): bigint {
  if (!Number.isInteger(promotionPercent) || promotionPercent < 0 || promotionPercent > 100) {
    throw new RangeError(`promotion percent must be an integer 0-100: ${promotionPercent}`);
  }
  const rateNanos = decimalToNanos(currency.perUsd);
  const step = minorUnitNanos(currency);
  const numerator = usdNanos * rateNanos * BigInt(100 - promotionPercent);
  const denominator = NANOS_PER_UNIT * 100n * step;
  return divideRoundHalfUp(numerator, denominator) * step;
}
