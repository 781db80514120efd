// The exchange-rate table: fixed, documented rates (a reference mesh needs reproducible quotes,
// not live markets). `perUsd` is how many units of the currency one US dollar buys.
export interface Currency {
  readonly code: string;
  /** Decimal string, at most 9 fractional digits. */
  readonly perUsd: string;
  /** Digits after the decimal point of the currency's minor unit (ISO 4217). */
  readonly minorUnitDigits: number;
}

export const CURRENCIES: ReadonlyMap<string, Currency> = new Map(
  (
    [
      { code: 'USD', perUsd: '1', minorUnitDigits: 2 },
      { code: 'EUR', perUsd: '0.92', minorUnitDigits: 2 },
      { code: 'GBP', perUsd: '0.79', minorUnitDigits: 2 },
      { code: 'JPY', perUsd: '151.37', minorUnitDigits: 0 },
      { code: 'CHF', perUsd: '0.88', minorUnitDigits: 2 },
      { code: 'CAD', perUsd: '1.36', minorUnitDigits: 2 },
      { code: 'AUD', perUsd: '1.52', minorUnitDigits: 2 },
    ] as const
  ).map((c) => [c.code, Object.freeze({ ...c })]),
);

export function currencyCodes(): string[] {
  return [...CURRENCIES.keys()].sort();
}
