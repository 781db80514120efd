// The built service as a process: bad config exits 2; with a fake ADS server it reaches SERVING,
// answers health (Check and Watch) and reflection on the admin port, serves on its xDS-managed
// port, and on SIGTERM goes NOT_SERVING, drains and exits 0.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { service as healthService } from 'grpc-health-check';
import { PricingServiceClient, type ListCurrenciesResponse } from '../../../gen/ts/shop/pricing/v1/pricing';
import { FakeAds } from './testing/fake-ads';
import { ServiceProcess } from './testing/child';
import { listeningSockets } from './testing/proc-net';
import { pollUntil } from './runtime/net';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pricing-main-'));

test('a bad configuration exits 2 with one line naming every bad variable', async () => {
  const proc = new ServiceProcess({ MESH_PORT: 'abc', MESH_DRAIN_TIMEOUT: '0', PRICING_PROMOTION_PERCENT: '150' });
  const code = await proc.exited;
  assert.equal(code, 2);
  assert.equal(
    proc.stderr,
    'invalid configuration: MESH_PORT: not an integer: "abc"; MESH_DRAIN_TIMEOUT: must be > 0; ' +
      'GRPC_XDS_BOOTSTRAP: required; PRICING_PROMOTION_PERCENT: must be between 0 and 100: 150\n',
  );
  assert.deepEqual(proc.lines, []);
});

test('without its xDS listener it stays NOT_SERVING, and SIGTERM still exits 0', async () => {
  const ads = new FakeAds(false);
  await ads.start();
  const bootstrap = path.join(tmp, 'silent-bootstrap.json');
  fs.writeFileSync(bootstrap, JSON.stringify(ads.bootstrap('pricing-silent-test', 'pricing')));
  const proc = new ServiceProcess({ GRPC_XDS_BOOTSTRAP: bootstrap, MESH_REGISTER: 'false', OTEL_TRACES_EXPORTER: 'none' });
  try {
    const admin = await proc.waitForLog('admin server listening');
    const started = await proc.waitForLog('business server started; waiting for its xDS listener');
    await pollUntil(() => ads.requested.has(String(started.listener)), { timeoutMs: 10_000 });
    const health = new HealthClient(String(admin.address), grpc.credentials.createInsecure()) as unknown as Health;
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      health.check({ service: '' }, (err, r) => (err ? reject(err) : resolve(r))),
    );
    health.close();
    assert.equal(res.status, 'NOT_SERVING');
    const port = Number(String(started.address).split(':').pop());
    assert.deepEqual(listeningSockets(port), [], 'nothing listens before the listener arrives');
    process.kill(proc.child.pid!, 'SIGTERM');
    assert.equal(await proc.exited, 0);
    assert.ok(!proc.lines.some((l) => l.message === 'serving'));
    assert.ok(proc.lines.some((l) => l.message === 'stopped'));
  } finally {
    proc.kill();
    ads.stop();
  }
});

const HealthClient = grpc.makeClientConstructor(healthService, 'grpc.health.v1.Health');
type Health = grpc.Client & {
  check(req: { service: string }, cb: (err: grpc.ServiceError | null, res: { status: string }) => void): void;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
};

function reflectionClient(address: string) {
  const reflectionDir = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
  const def = protoLoader.loadSync('grpc/reflection/v1/reflection.proto', { includeDirs: [reflectionDir], keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => grpc.Client } } };
  };
  return new pkg.grpc.reflection.v1.ServerReflection(address, grpc.credentials.createInsecure()) as grpc.Client & {
    ServerReflectionInfo(): grpc.ClientDuplexStream<Record<string, unknown>, Record<string, any>>;
  };
}

function reflect(client: ReturnType<typeof reflectionClient>, request: Record<string, unknown>): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    const stream = client.ServerReflectionInfo();
    stream.once('data', (res) => {
      resolve(res);
      stream.end();
    });
    stream.once('error', reject);
    stream.write(request);
  });
}

describe('the service process with a fake control plane', () => {
  const ads = new FakeAds();
  let proc: ServiceProcess;
  let adminAddress = '';
  let businessAddress = '';

  before(async () => {
    await ads.start();
    const bootstrap = path.join(tmp, 'bootstrap.json');
    fs.writeFileSync(bootstrap, JSON.stringify(ads.bootstrap('pricing-main-test', 'pricing')));
    proc = new ServiceProcess({
      GRPC_XDS_BOOTSTRAP: bootstrap,
      MESH_INSTANCE_ID: 'pricing-main-test',
      MESH_SERVICE_VERSION: 'v2',
      MESH_REGISTER: 'false',
      MESH_DRAIN_TIMEOUT: '2',
      OTEL_TRACES_EXPORTER: 'none',
      PRICING_PROMOTION_PERCENT: '10',
    });
    const serving = await proc.waitForLog('serving');
    adminAddress = String(serving.admin_address);
    businessAddress = String(serving.address);
  });

  after(() => {
    proc.kill();
    ads.stop();
  });

  test('health is SERVING for "" and for the service; reflection describes PricingService', async () => {
    const health = new HealthClient(adminAddress, grpc.credentials.createInsecure()) as unknown as Health;
    for (const service of ['', 'shop.pricing.v1.PricingService']) {
      const res = await new Promise<{ status: string }>((resolve, reject) =>
        health.check({ service }, (err, r) => (err ? reject(err) : resolve(r))),
      );
      assert.equal(res.status, 'SERVING', service);
    }
    health.close();

    const reflection = reflectionClient(adminAddress);
    const listed = await reflect(reflection, { list_services: '*' });
    const names = (listed.list_services_response.service as { name: string }[]).map((s) => s.name).sort();
    assert.deepEqual(names, ['grpc.health.v1.Health', 'shop.pricing.v1.PricingService']);
    const described = await reflect(reflection, { file_containing_symbol: 'shop.pricing.v1.PricingService' });
    const files = described.file_descriptor_response.file_descriptor_proto as Buffer[];
    assert.ok(files.length >= 1);
    assert.ok(Buffer.concat(files).includes('GetQuote'));
    reflection.close();
  });

  test('the business port is xDS-managed, on 127.0.0.1 only, and serves', async () => {
    const port = Number(businessAddress.split(':').pop());
    assert.ok(ads.requested.has(`grpc/server?xds.resource.listening_address=${businessAddress}`));
    assert.deepEqual(listeningSockets(port), [{ family: 4, address: '127.0.0.1', port }]);
    const adminPort = Number(adminAddress.split(':').pop());
    assert.deepEqual(listeningSockets(adminPort), [{ family: 4, address: '127.0.0.1', port: adminPort }]);
    const client = new PricingServiceClient(businessAddress, grpc.credentials.createInsecure());
    const res = await new Promise<ListCurrenciesResponse>((resolve, reject) =>
      client.listCurrencies({}, (err, r) => (err ? reject(err) : resolve(r))),
    );
    client.close();
    assert.deepEqual(res.currencyCodes, ['AUD', 'CAD', 'CHF', 'EUR', 'GBP', 'JPY', 'USD']);
  });

  test('SIGTERM: NOT_SERVING first, then drain, then exit 0', async () => {
    const health = new HealthClient(adminAddress, grpc.credentials.createInsecure()) as unknown as Health;
    const seen: string[] = [];
    const watch = health.watch({ service: 'shop.pricing.v1.PricingService' });
    watch.on('data', (m: { status: string }) => seen.push(m.status));
    watch.on('error', () => undefined); // the admin server goes away at the end
    await pollUntil(() => seen.includes('SERVING'), { timeoutMs: 5_000, intervalMs: 20 });

    process.kill(proc.child.pid!, 'SIGTERM');
    const code = await proc.exited;
    health.close();
    assert.equal(code, 0);
    assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
    const messages = proc.lines.map((l) => l.message);
    const order = ['serving', 'shutting down', 'business server drained', 'stopped'].map((m) => messages.indexOf(m));
    assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1])), JSON.stringify(messages));
    for (const line of proc.lines) {
      assert.equal(line['service.name'], 'pricing');
      assert.equal(line['service.instance.id'], 'pricing-main-test');
    }
  });
});
