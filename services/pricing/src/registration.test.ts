// Registration against a real Consul agent (`consul agent -dev` on free ports), when a consul
// binary is available: $CONSUL_BIN, the repo's .tools/bin/consul, or consul on PATH. Skipped, and
// said so, when there is none.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REPO_ROOT } from './pricing/paths';
import { pollUntil, reserveFreePort } from './runtime/net';
import { ServiceProcess } from './testing/child';
import { FakeAds } from './testing/fake-ads';

function findConsul(): string | undefined {
  const candidates = [process.env.CONSUL_BIN, path.join(REPO_ROOT, '.tools', 'bin', 'consul')];
  for (const c of candidates) if (c && fs.existsSync(c)) return c;
  const which = spawnSync('sh', ['-c', 'command -v consul'], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() : undefined;
}

const consulBin = findConsul();

async function getJson(url: string): Promise<any> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

describe('Consul registration', { skip: consulBin ? false : 'no consul binary (set CONSUL_BIN or run make setup)' }, () => {
  const ads = new FakeAds();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pricing-consul-'));
  let consul: ChildProcess;
  let consulLog = '';
  let api = '';
  let proc: ServiceProcess;

  before(async () => {
    const [http, serf, server] = [await reserveFreePort('127.0.0.1'), await reserveFreePort('127.0.0.1'), await reserveFreePort('127.0.0.1')];
    api = `http://127.0.0.1:${http}`;
    consul = spawn(
      consulBin!,
      [
        'agent', '-dev', '-bind', '127.0.0.1', '-client', '127.0.0.1', '-data-dir', path.join(tmp, 'consul'),
        '-hcl', `ports { http = ${http}, dns = -1, grpc = -1, grpc_tls = -1, serf_lan = ${serf}, serf_wan = -1, server = ${server} }`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    consul.stdout!.on('data', (c: Buffer) => (consulLog = (consulLog + c.toString()).slice(-4000)));
    consul.stderr!.on('data', (c: Buffer) => (consulLog = (consulLog + c.toString()).slice(-4000)));
    await pollUntil(
      async () => {
        try {
          return (await getJson(`${api}/v1/status/leader`)) !== '';
        } catch {
          return false;
        }
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    ).catch((err: Error) => {
      throw new Error(`consul did not start: ${err.message}\n${consulLog}`);
    });

    await ads.start();
    const bootstrap = path.join(tmp, 'bootstrap.json');
    fs.writeFileSync(bootstrap, JSON.stringify(ads.bootstrap('pricing-consul-test', 'pricing')));
    proc = new ServiceProcess({
      GRPC_XDS_BOOTSTRAP: bootstrap,
      MESH_INSTANCE_ID: 'pricing-consul-test',
      MESH_SERVICE_VERSION: 'v2',
      CONSUL_HTTP_ADDR: `127.0.0.1:${http}`,
      OTEL_TRACES_EXPORTER: 'none',
    });
  });

  after(() => {
    proc?.kill();
    ads.stop();
    if (consul?.pid && consul.exitCode === null) process.kill(consul.pid, 'SIGKILL');
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
