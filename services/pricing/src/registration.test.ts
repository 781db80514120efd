// Registration against a real Consul agent (`consul agent -dev` on free ports), when a consul
// binary is available: $CONSUL_BIN, the repo's .tools/bin/consul, or consul on PATH. Skipped, and
// said so, when there is none.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pollUntil } from './runtime/net';
import { ServiceProcess } from './testing/child';
import { DevConsul, getJson, SKIP_WITHOUT_CONSUL } from './testing/consul';
import { FakeAds } from './testing/fake-ads';

describe('Consul registration', { skip: SKIP_WITHOUT_CONSUL }, () => {
  const ads = new FakeAds();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pricing-consul-'));
  let consul: DevConsul;
  let api = '';
  let proc: ServiceProcess;

  before(async () => {
    consul = new DevConsul();
    await consul.start();
    api = consul.api;

    await ads.start();
    const bootstrap = path.join(tmp, 'bootstrap.json');
    fs.writeFileSync(bootstrap, JSON.stringify(ads.bootstrap('pricing-consul-test', 'pricing')));
    proc = new ServiceProcess({
      GRPC_XDS_BOOTSTRAP: bootstrap,
      MESH_INSTANCE_ID: 'pricing-consul-test',
      MESH_SERVICE_VERSION: 'v2',
      CONSUL_HTTP_ADDR: `127.0.0.1:${consul.httpPort}`,
      OTEL_TRACES_EXPORTER: 'none',
    });
  });

  after(() => {
    proc?.kill();
    ads.stop();
    consul?.kill();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('registers with metadata and a passing gRPC check, deregisters on SIGTERM', async () => {
    const registered = await proc.waitForLog('registered in consul');
    const serving = proc.lines.find((l) => l.message === 'serving')!;
    const port = Number(String(serving.address).split(':').pop());
    const adminPort = Number(String(serving.admin_address).split(':').pop());
    assert.equal(registered['service.id'], 'pricing-consul-test');

    const services = await getJson(`${api}/v1/agent/services`);
    const s = services['pricing-consul-test'];
    assert.ok(s, JSON.stringify(services));
    assert.equal(s.Service, 'pricing');
    assert.equal(s.Address, '127.0.0.1');
    assert.equal(s.Port, port);
    assert.deepEqual(s.Tags, ['v2', 'typescript']);
    assert.deepEqual(s.Meta, { version: 'v2', language: 'typescript', admin_port: String(adminPort) });

    // Consul's own gRPC health check against the admin port turns passing.
    let check: any;
    await pollUntil(
      async () => {
        const checks = await getJson(`${api}/v1/agent/checks`);
        check = Object.values(checks).find((c: any) => c.ServiceID === 'pricing-consul-test');
        return check?.Status === 'passing';
      },
      { timeoutMs: 15_000, intervalMs: 200 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(check)}`);
    });
    assert.equal(check.Type, 'grpc');
    assert.equal(check.Interval, '1s');
    assert.equal(check.Timeout, '1s');

    process.kill(proc.child.pid!, 'SIGTERM');
    assert.equal(await proc.exited, 0);
    const after = await getJson(`${api}/v1/agent/services`);
    assert.ok(!('pricing-consul-test' in after), 'deregistered');
    const messages = proc.lines.map((l) => l.message);
    assert.ok(messages.indexOf('deregistered from consul') > messages.indexOf('shutting down'));
    assert.ok(messages.indexOf('business server drained') > messages.indexOf('deregistered from consul'));
  });
});
