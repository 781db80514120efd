import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CURRENCIES, currencyCodes, type Currency } from './currencies';
import { decimalToNanos, divideRoundHalfUp, moneyToNanos, nanosToMoney, unitPriceNanos } from './money';

const usd = (decimal: string) => decimalToNanos(decimal);
const cur = (code: string) => CURRENCIES.get(code)!;
const show = (nanos: bigint) => nanosToMoney('X', nanos);

test('decimal and Money conversions are exact', () => {
  assert.equal(decimalToNanos('12.99'), 12_990_000_000n);
  assert.equal(decimalToNanos('0.000000001'), 1n);
  assert.throws(() => decimalToNanos('1.0000000001'), RangeError);
  assert.throws(() => decimalToNanos('-1'), RangeError);
  assert.equal(moneyToNanos({ currencyCode: 'USD', units: -1, nanos: -750_000_000 }), -1_750_000_000n);
  assert.deepEqual(nanosToMoney('USD', -1_750_000_000n), { currencyCode: 'USD', units: -1, nanos: -750_000_000 });
  assert.deepEqual(nanosToMoney('USD', 999_999_999n), { currencyCode: 'USD', units: 0, nanos: 999_999_999 });
  assert.throws(() => moneyToNanos({ currencyCode: 'USD', units: 1, nanos: -1 }), RangeError);
  assert.throws(() => moneyToNanos({ currencyCode: 'USD', units: 0, nanos: 1_000_000_000 }), RangeError);
  assert.throws(() => nanosToMoney('USD', BigInt(Number.MAX_SAFE_INTEGER) * 10n ** 9n + 10n ** 9n), RangeError);
});

test('division rounds half away from zero', () => {
  assert.equal(divideRoundHalfUp(5n, 2n), 3n);
  assert.equal(divideRoundHalfUp(7n, 2n), 4n);
  assert.equal(divideRoundHalfUp(149n, 100n), 1n);
  assert.equal(divideRoundHalfUp(150n, 100n), 2n);
  assert.equal(divideRoundHalfUp(-5n, 2n), -3n);
  assert.equal(divideRoundHalfUp(-149n, 100n), -1n);
  assert.equal(divideRoundHalfUp(0n, 7n), 0n);
});

test('unit prices round half up to the cent', () => {
  assert.deepEqual(show(unitPriceNanos(usd('0.125'), cur('USD'), 0)), { currencyCode: 'X', units: 0, nanos: 130_000_000 });
  assert.deepEqual(show(unitPriceNanos(usd('0.124999999'), cur('USD'), 0)), { currencyCode: 'X', units: 0, nanos: 120_000_000 });
  // 12.99 * 0.92 = 11.9508
  assert.equal(unitPriceNanos(usd('12.99'), cur('EUR'), 0), 11_950_000_000n);
  // 10.00 * 0.79 = 7.9 exactly
  assert.equal(unitPriceNanos(usd('10'), cur('GBP'), 0), 7_900_000_000n);
});

test('JPY has no minor unit', () => {
  // 12.99 * 151.37 = 1966.2963 -> 1966
  assert.deepEqual(nanosToMoney('JPY', unitPriceNanos(usd('12.99'), cur('JPY'), 0)), {
    currencyCode: 'JPY',
    units: 1966,
    nanos: 0,
  });
  // 0.50 * 151.37 = 75.685 -> 76
  assert.equal(unitPriceNanos(usd('0.5'), cur('JPY'), 0), 76_000_000_000n);
  const zeroDigits: Currency = { code: 'ZZZ', perUsd: '100', minorUnitDigits: 0 };
  assert.equal(unitPriceNanos(usd('0.125'), zeroDigits, 0), 13_000_000_000n); // 12.5 -> 13
  assert.equal(unitPriceNanos(usd('0.115'), zeroDigits, 0), 12_000_000_000n); // 11.5 -> 12
  assert.equal(unitPriceNanos(usd('0.114'), zeroDigits, 0), 11_000_000_000n); // 11.4 -> 11
});

test('the promotion is applied before the single rounding', () => {
  // 19.99 * 0.9 = 17.991 -> 17.99
  assert.equal(unitPriceNanos(usd('19.99'), cur('USD'), 10), 17_990_000_000n);
  // 0.05 * 0.9 = 0.045 -> 0.05, half up
  assert.equal(unitPriceNanos(usd('0.05'), cur('USD'), 10), 50_000_000n);
  // 12.99 EUR with 10 %: 12.99 * 0.92 * 0.9 = 10.75572 -> 10.76
  assert.equal(unitPriceNanos(usd('12.99'), cur('EUR'), 10), 10_760_000_000n);
  assert.equal(unitPriceNanos(usd('12.99'), cur('EUR'), 100), 0n);
  assert.throws(() => unitPriceNanos(usd('1'), cur('USD'), 101), RangeError);
  assert.throws(() => unitPriceNanos(usd('1'), cur('USD'), 2.5), RangeError);
});

test('the table has the required currencies, listed sorted', () => {
  for (const code of ['USD', 'EUR', 'GBP', 'JPY', 'CHF', 'CAD']) assert.ok(CURRENCIES.has(code), code);
  const codes = currencyCodes();
  assert.deepEqual(codes, [...codes].sort());
  assert.equal(cur('USD').perUsd, '1');
  for (const c of CURRENCIES.values()) assert.ok(decimalToNanos(c.perUsd) > 0n, c.code);
});
