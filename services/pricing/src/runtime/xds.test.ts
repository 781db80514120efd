// The xDS-managed server against a fake ADS server that sends only its listener. Covers our patch
// of @grpc/grpc-js-xds: asked for 127.0.0.1, the server must listen on 127.0.0.1 only.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  PricingServiceClient,
  type ListCurrenciesResponse,
} from '../../../../gen/ts/shop/pricing/v1/pricing';
import { FakeAds } from '../testing/fake-ads';
import { listeningSockets } from '../testing/proc-net';
import { pricingRegistration } from '../pricing/service';
import { Logger } from './log';
import { canConnect, pollUntil, reserveFreePort } from './net';
import { startXdsServer, type BusinessServer } from './xds';

const ads = new FakeAds();
let business: BusinessServer | undefined;

before(async () => {
  await ads.start();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pricing-xds-'));
  const file = path.join(dir, 'bootstrap.json');
  fs.writeFileSync(file, JSON.stringify(ads.bootstrap('pricing-xds-test', 'pricing')));
  // grpc-js-xds reads the bootstrap once per process, when the first xDS object is created.
  process.env.GRPC_XDS_BOOTSTRAP = file;
});

after(async () => {
  if (business) await new Promise<void>((resolve) => business!.server.tryShutdown(() => resolve()));
  ads.stop();
});

test('an XdsServer bound to 127.0.0.1 serves once its listener arrives, on 127.0.0.1 only', async () => {
  const port = await reserveFreePort('127.0.0.1');
  const bindErrors: Error[] = [];
  const logger = new Logger({ serviceName: 'pricing', instanceId: 't', level: 'error', write: () => undefined });
  business = startXdsServer({
    host: '127.0.0.1',
    port,
    services: [
      pricingRegistration({
        prices: { basePricesUsd: async () => [], close: () => undefined },
        logger,
        settings: { version: 'v1', promotionPercent: 0 },
      }),
    ],
    onBindError: (err) => bindErrors.push(err),
  });
  await pollUntil(() => canConnect('127.0.0.1', port), { timeoutMs: 20_000 });
  assert.ok(ads.requested.has(`grpc/server?xds.resource.listening_address=127.0.0.1:${port}`));
  assert.deepEqual(ads.nacks, []);
  assert.deepEqual(bindErrors, []);

  // The kernel's view: exactly one listening socket on this port, 127.0.0.1 (not 0.0.0.0 or ::).
  assert.deepEqual(listeningSockets(port), [{ family: 4, address: '127.0.0.1', port }]);

  // And it serves the business service.
  const client = new PricingServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const res = await new Promise<ListCurrenciesResponse>((resolve, reject) =>
    client.listCurrencies({}, (err, r) => (err ? reject(err) : resolve(r))),
  );
  client.close();
  assert.ok(res.currencyCodes.includes('USD'));
});
