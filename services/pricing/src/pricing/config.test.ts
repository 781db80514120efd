import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, EnvReader } from '@polymesh/runtime';
import { readPricingConfig } from './config';

function read(env: Record<string, string>) {
  const r = new EnvReader(env);
  const config = readPricingConfig(r);
  r.finish();
  return config;
}

test('PRICING_PROMOTION_PERCENT is an integer 0..100, 0 by default', () => {
  assert.equal(read({}).promotionPercent, 0);
  assert.equal(read({ PRICING_PROMOTION_PERCENT: '100' }).promotionPercent, 100);
  for (const bad of ['101', '-1', '10.5']) {
    assert.throws(() => read({ PRICING_PROMOTION_PERCENT: bad }), (err: unknown) => err instanceof ConfigError && /^invalid configuration: PRICING_PROMOTION_PERCENT: /.test(err.message));
  }
});
