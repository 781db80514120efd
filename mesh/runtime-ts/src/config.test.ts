import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig, type EnvReader } from './config';

// A service's own variable, read by the same reader as the contract's.
const readServiceConfig = (r: EnvReader) => ({ promotionPercent: r.integer('PRICING_PROMOTION_PERCENT', 0, 0, 100) });

const bootstrap = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-config-')), 'bootstrap.json');
fs.writeFileSync(bootstrap, '{}');

function load(env: Record<string, string>) {
  return loadConfig(env, 'pricing', readServiceConfig);
}

test('defaults follow the contract', () => {
  const { mesh, service } = load({ GRPC_XDS_BOOTSTRAP: bootstrap });
  assert.equal(mesh.serviceName, 'pricing');
  assert.equal(mesh.serviceVersion, 'v1');
  assert.match(mesh.instanceId, /^pricing-\d+$/);
  assert.equal(mesh.host, '127.0.0.1');
  assert.equal(mesh.port, 0);
  assert.equal(mesh.adminPort, 0);
  assert.equal(mesh.dataDir, 'data');
  assert.equal(mesh.drainTimeoutSeconds, 5);
  assert.equal(mesh.logLevel, 'info');
  assert.equal(mesh.register, true);
  assert.equal(mesh.consulHttpAddr, 'http://127.0.0.1:8500');
  assert.equal(mesh.otlpEndpoint, 'http://127.0.0.1:4317');
  assert.equal(mesh.tracesExporter, 'otlp');
  assert.equal(mesh.namespace, 'default');
  assert.deepEqual(mesh.servicePorts, {});
  assert.equal(mesh.callTimeoutSeconds, 5);
  assert.deepEqual(mesh.propagateHeaders, ['x-user-tier']);
  assert.deepEqual([mesh.injectFailurePercent, mesh.injectDelayMs], [0, 0]);
  assert.equal(service.promotionPercent, 0);
});

test('values are parsed and the result is frozen', () => {
  const config = load({
    GRPC_XDS_BOOTSTRAP: bootstrap,
    OTEL_SERVICE_NAME: 'pricing',
    MESH_SERVICE_VERSION: 'v2',
    MESH_INSTANCE_ID: 'pricing-v2-1',
    MESH_PORT: '7001',
    MESH_ADMIN_PORT: '7002',
    MESH_DRAIN_TIMEOUT: '0.5',
    MESH_LOG_LEVEL: 'DEBUG',
    MESH_REGISTER: 'false',
    CONSUL_HTTP_ADDR: 'http://127.0.0.1:18500',
    OTEL_TRACES_EXPORTER: 'none',
    PRICING_PROMOTION_PERCENT: '10',
    MESH_NAMESPACE: 'shop',
    MESH_SERVICE_PORTS: 'catalog=50051, inventory=50071',
    MESH_CALL_TIMEOUT: '2.5',
  });
  assert.equal(config.mesh.namespace, 'shop');
  assert.deepEqual(config.mesh.servicePorts, { catalog: 50051, inventory: 50071 });
  assert.equal(config.mesh.callTimeoutSeconds, 2.5);
  assert.equal(config.mesh.serviceVersion, 'v2');
  assert.equal(config.mesh.instanceId, 'pricing-v2-1');
  assert.equal(config.mesh.port, 7001);
  assert.equal(config.mesh.adminPort, 7002);
  assert.equal(config.mesh.drainTimeoutSeconds, 0.5);
  assert.equal(config.mesh.logLevel, 'debug');
  assert.equal(config.mesh.register, false);
  assert.equal(config.mesh.consulHttpAddr, 'http://127.0.0.1:18500');
  assert.equal(config.mesh.tracesExporter, 'none');
  assert.equal(config.service.promotionPercent, 10);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.mesh) && Object.isFrozen(config.service));
  assert.throws(() => {
    (config.mesh as { port: number }).port = 1;
  }, TypeError);
});

test('one error names every bad variable, ours and the service’s', () => {
  let caught: unknown;
  try {
    load({
      MESH_PORT: 'abc',
      MESH_ADMIN_PORT: '70000',
      MESH_DRAIN_TIMEOUT: '0',
      MESH_LOG_LEVEL: 'loud',
      MESH_REGISTER: 'maybe',
      MESH_HOST: 'localhost',
      CONSUL_HTTP_ADDR: 'ftp://x',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'nope',
      OTEL_TRACES_EXPORTER: 'jaeger',
      PRICING_PROMOTION_PERCENT: '10.5',
      MESH_NAMESPACE: 'Shop_1',
      MESH_SERVICE_PORTS: 'catalog=x',
      MESH_CALL_TIMEOUT: '-1',
    });
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError);
  const names = caught.problems.map((p) => p.split(':')[0]);
  assert.deepEqual(names.sort(), [
    'CONSUL_HTTP_ADDR',
    'GRPC_XDS_BOOTSTRAP',
    'MESH_ADMIN_PORT',
    'MESH_CALL_TIMEOUT',
    'MESH_DRAIN_TIMEOUT',
    'MESH_HOST',
    'MESH_LOG_LEVEL',
    'MESH_NAMESPACE',
    'MESH_PORT',
    'MESH_REGISTER',
    'MESH_SERVICE_PORTS',
    'OTEL_EXPORTER_OTLP_ENDPOINT',
    'OTEL_TRACES_EXPORTER',
    'PRICING_PROMOTION_PERCENT',
  ]);
  assert.match(caught.message, /^invalid configuration: /);
  assert.ok(caught.message.includes('MESH_PORT: not an integer: "abc"'));
  assert.ok(caught.message.includes('MESH_DRAIN_TIMEOUT: must be > 0'));
  assert.ok(caught.message.includes('MESH_SERVICE_PORTS: "catalog=x": not a port'));
  assert.ok(!caught.message.includes('\n'));
});

test('MESH_XDS off needs no bootstrap and dials the Kubernetes Service', async () => {
  assert.equal(load({ GRPC_XDS_BOOTSTRAP: bootstrap }).mesh.xds, true);
  const { mesh } = load({ MESH_XDS: 'off', MESH_NAMESPACE: 'shop', MESH_SERVICE_PORTS: 'pricing=50061' });
  assert.deepEqual([mesh.xds, mesh.xdsBootstrap], [false, '']);
  const { targetOf } = await import('./dial');
  assert.equal(targetOf('pricing', mesh.servicePorts, mesh.namespace), 'dns:///pricing.shop.svc.cluster.local:50061');
  assert.equal(targetOf('pricing', mesh.servicePorts), 'xds:///pricing:50061');
  assert.throws(
    () => load({ MESH_XDS: 'plain' }),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message === 'invalid configuration: MESH_XDS: not a boolean (true/false): "plain"; GRPC_XDS_BOOTSTRAP: required',
  );
});

test('a bootstrap path that cannot be read is a bad value', () => {
  assert.throws(
    () => load({ GRPC_XDS_BOOTSTRAP: path.join(os.tmpdir(), 'no-such-dir', 'bootstrap.json') }),
    /GRPC_XDS_BOOTSTRAP: not a readable file/,
  );
});

test('every bad MESH_SERVICE_PORTS entry is named', () => {
  assert.throws(
    () => load({ GRPC_XDS_BOOTSTRAP: bootstrap, MESH_SERVICE_PORTS: 'catalog=0,pricing,inventory=1=2,catalog=7,a=70000' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'MESH_SERVICE_PORTS: "catalog=0": not a port',
        'MESH_SERVICE_PORTS: "pricing": not name=port',
        'MESH_SERVICE_PORTS: "inventory=1=2": not name=port',
        'MESH_SERVICE_PORTS: "a=70000": not a port',
      ]);
      return true;
    },
  );
  assert.throws(() => load({ GRPC_XDS_BOOTSTRAP: bootstrap, MESH_SERVICE_PORTS: 'catalog=1,catalog=2' }), /catalog given twice/);
});

test('MESH_PROPAGATE_HEADERS is read name by name, every bad name named', () => {
  const { mesh } = load({ GRPC_XDS_BOOTSTRAP: bootstrap, MESH_PROPAGATE_HEADERS: ' x-user-tier, x-canary ,,x_debug.v2' });
  assert.deepEqual(mesh.propagateHeaders, ['x-user-tier', 'x-canary', 'x_debug.v2']);
  assert.throws(
    () => load({ GRPC_XDS_BOOTSTRAP: bootstrap, MESH_PROPAGATE_HEADERS: 'X-User-Tier,x tier,grpc-timeout,trace-bin,x-a,x-a' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'MESH_PROPAGATE_HEADERS: "X-User-Tier": not a lower-case header name',
        'MESH_PROPAGATE_HEADERS: "x tier": not a lower-case header name',
        'MESH_PROPAGATE_HEADERS: "grpc-timeout": grpc-* and *-bin headers are not propagated',
        'MESH_PROPAGATE_HEADERS: "trace-bin": grpc-* and *-bin headers are not propagated',
        'MESH_PROPAGATE_HEADERS: "x-a": given twice',
      ]);
      return true;
    },
  );
});

test('injected failures are read and checked', () => {
  const { mesh } = load({ GRPC_XDS_BOOTSTRAP: bootstrap, MESH_INJECT_FAILURE_PERCENT: '50', MESH_INJECT_DELAY_MS: '300' });
  assert.deepEqual([mesh.injectFailurePercent, mesh.injectDelayMs], [50, 300]);
  assert.throws(
    () => load({ GRPC_XDS_BOOTSTRAP: bootstrap, MESH_INJECT_FAILURE_PERCENT: '101', MESH_INJECT_DELAY_MS: '-1' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'MESH_INJECT_FAILURE_PERCENT: must be between 0 and 100: 101',
        'MESH_INJECT_DELAY_MS: must be between 0 and 3600000: -1',
      ]);
      return true;
    },
  );
});

test('the Consul token comes from CONSUL_HTTP_TOKEN or the file CONSUL_HTTP_TOKEN_FILE names, never shown', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-config-token-'));
  const file = path.join(dir, 'pricing.token');
  const empty = path.join(dir, 'empty.token');
  const missing = path.join(dir, 'missing.token');
  fs.writeFileSync(file, '9a50b0ec-62eb-4e5e-8323-c026d0b467ff\n', { mode: 0o600 });
  fs.writeFileSync(empty, '\n', { mode: 0o600 });
  const token = (env: Record<string, string>) => load({ GRPC_XDS_BOOTSTRAP: bootstrap, ...env }).mesh.consulToken;
  assert.equal(token({}), '');
  assert.equal(token({ CONSUL_HTTP_TOKEN: 's3cret' }), 's3cret');
  assert.equal(token({ CONSUL_HTTP_TOKEN_FILE: file }), '9a50b0ec-62eb-4e5e-8323-c026d0b467ff');
  const bad: [Record<string, string>, string][] = [
    [{ CONSUL_HTTP_TOKEN: 's3cret', CONSUL_HTTP_TOKEN_FILE: file }, 'CONSUL_HTTP_TOKEN_FILE: CONSUL_HTTP_TOKEN is set too; give one'],
    [{ CONSUL_HTTP_TOKEN_FILE: missing }, `CONSUL_HTTP_TOKEN_FILE: cannot read ${JSON.stringify(missing)}`],
    [{ CONSUL_HTTP_TOKEN_FILE: empty }, `CONSUL_HTTP_TOKEN_FILE: ${JSON.stringify(empty)} is empty`],
    [{ CONSUL_HTTP_TOKEN: 'two words' }, 'CONSUL_HTTP_TOKEN: not a token (printable ASCII, no spaces)'],
  ];
  for (const [env, problem] of bad) {
    assert.throws(() => token(env), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `invalid configuration: ${problem}`);
      return true;
    });
  }
});
