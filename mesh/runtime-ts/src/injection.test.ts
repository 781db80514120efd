// The injected failures' interceptor on a plain grpc-js server (xDS plays no part): what a caller sees.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { injectedFailures, injectedFailuresInterceptor } from './injection';
import { Logger } from './log';
import { bindAsync } from './net';
import type { MeshConfig } from './config';

const Ping = {
  ping: {
    path: '/test.Ping/Ping',
    requestStream: false,
    responseStream: false,
    requestSerialize: (value: string) => Buffer.from(value),
    requestDeserialize: (bytes: Buffer) => bytes.toString(),
    responseSerialize: (value: string) => Buffer.from(value),
    responseDeserialize: (bytes: Buffer) => bytes.toString(),
  },
} satisfies grpc.ServiceDefinition;
interface PingClient extends grpc.Client {
  ping(request: string, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: grpc.requestCallback<string>): grpc.ClientUnaryCall;
}
const PingClient = grpc.makeGenericClientConstructor(Ping, 'test.Ping') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
) => PingClient;

const stops: (() => void)[] = [];
after(() => stops.forEach((stop) => stop()));

/** A server whose handler records each request, behind the interceptor; and a ping() to it. */
async function serve(percent: number, delayMs: number) {
  const handled: string[] = [];
  const server = new grpc.Server({ interceptors: [injectedFailuresInterceptor(percent, delayMs)] });
  server.addService(Ping, {
    ping: (call: grpc.ServerUnaryCall<string, string>, callback: grpc.sendUnaryData<string>) => {
      handled.push(call.request);
      callback(null, call.request);
    },
  });
  const port = await bindAsync(server, '127.0.0.1:0', grpc.ServerCredentials.createInsecure());
  const client = new PingClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  stops.push(() => client.close(), () => server.forceShutdown());
  const ping = (request: string, deadline: Date = new Date(Date.now() + 5000)) =>
    new Promise<{ err: grpc.ServiceError | null; ms: number }>((resolve) => {
      const started = Date.now();
      client.ping(request, new grpc.Metadata(), { deadline }, (err) => resolve({ err, ms: Date.now() - started }));
    });
  return { handled, ping };
}

test('at 100 % every call is UNAVAILABLE and no handler runs', async () => {
  const { handled, ping } = await serve(100, 0);
  for (let i = 0; i < 5; i++) {
    const { err } = await ping('x');
    assert.equal(err?.code, grpc.status.UNAVAILABLE);
    assert.equal(err.details, 'injected failure (MESH_INJECT_FAILURE_PERCENT=100)');
  }
  assert.deepEqual(handled, []);
});

test('the delay comes before the handler and yields to the deadline', async () => {
  const { handled, ping } = await serve(0, 300);
  await ping('connect');
  const slow = await ping('slow');
  assert.equal(slow.err, null);
  assert.ok(slow.ms >= 295 && slow.ms < 600, `took ${slow.ms} ms`); // timers may fire a ms early
  const late = await ping('late', new Date(Date.now() + 100));
  assert.equal(late.err?.code, grpc.status.DEADLINE_EXCEEDED);
  assert.ok(late.ms < 300, `took ${late.ms} ms`);
  // This call's delay ends after the late call's would have: had its handler run, it ran first.
  await ping('after');
  assert.deepEqual(handled, ['connect', 'slow', 'after']);
});

test('off by default; said once at WARN when on', () => {
  const lines: Record<string, unknown>[] = [];
  const logger = new Logger({ serviceName: 't', instanceId: 't-1', level: 'info', write: (l) => lines.push(JSON.parse(l)) });
  const config = (injectFailurePercent: number, injectDelayMs: number) => ({ injectFailurePercent, injectDelayMs }) as MeshConfig;
  assert.deepEqual(injectedFailures(config(0, 0), logger), []);
  assert.equal(injectedFailures(config(50, 300), logger).length, 1);
  assert.deepEqual(
    lines.map((l) => [l.severity, l.message]),
    [['WARN', 'injecting failures: MESH_INJECT_FAILURE_PERCENT=50, MESH_INJECT_DELAY_MS=300']],
  );
});
