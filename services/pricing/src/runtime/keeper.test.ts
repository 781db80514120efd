// The registration keeper against a real `consul agent -dev`, which keeps no state: a restart
// forgets every registration. Skipped, and said so, without a consul binary.
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { DevConsul, SKIP_WITHOUT_CONSUL } from '../testing/consul';
import type { MeshConfig } from './config';
import { buildRegistration, ConsulAgent, KEEP_REGISTERED_EVERY_MS, RegistrationKeeper } from './consul';
import { Logger } from './log';
import { bindAsync, pollUntil } from './net';

/** A health server answering SERVING: Consul's gRPC check passes only if it dials this address. */
async function adminHealth(): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  new HealthImplementation({ '': 'SERVING' }).addToServer(server);
  const port = await bindAsync(server, '127.0.0.1:0', grpc.ServerCredentials.createInsecure());
  return { server, port };
}

/** The parts of the agent's view that do not change on their own. */
function stable(view: { service: any; check: any }): unknown {
  const { Status, Output, CreateIndex, ModifyIndex, ...check } = view.check;
  void [Status, Output, CreateIndex, ModifyIndex];
  return { service: view.service, check };
}

describe('registration keeper (real Consul)', { skip: SKIP_WITHOUT_CONSUL }, () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(id: string) {
    const consul = new DevConsul();
    cleanups.push(() => consul.kill());
    await consul.start();
    const admin = await adminHealth();
    cleanups.push(() => admin.server.forceShutdown());
    const lines: Record<string, unknown>[] = [];
    const logger = new Logger({
      serviceName: 'pricing',
      instanceId: id,
      level: 'debug',
      write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>),
    });
    const config = { serviceName: 'pricing', serviceVersion: 'v2', instanceId: id, host: '127.0.0.1' } as MeshConfig;
    const body = buildRegistration(config, { business: 7001, admin: admin.port }, 'typescript');
    // What MeshInstance.start() does: register once, then keep it registered.
    const agent = new ConsulAgent(consul.api);
    await agent.register(body);
    const keeper = new RegistrationKeeper(agent, body, logger);
    keeper.start();
    cleanups.push(() => keeper.stop());
    const count = (message: string) => lines.filter((l) => l.message === message).length;
    return { consul, agent, keeper, admin, count, lines };
  }

  test('registers the same body again once a restarted Consul has forgotten it', async () => {
    const id = 'pricing-keeper-a';
    const { consul, admin, count, lines } = await setup(id);
    let before: { service: any; check: any } | undefined;
    await pollUntil(async () => (before = await consul.view(id))?.check?.Status === 'passing', { timeoutMs: 15_000 });
    assert.equal(before!.service.Service, 'pricing');
    assert.equal(before!.service.Address, '127.0.0.1');
    assert.equal(before!.service.Port, 7001);
    assert.deepEqual(before!.service.Tags, ['v2', 'typescript']);
    assert.deepEqual(before!.service.Meta, { version: 'v2', language: 'typescript', admin_port: String(admin.port) });
    assert.equal(before!.check.Type, 'grpc');
    assert.equal(before!.check.Interval, '1s');
    assert.equal(before!.check.Timeout, '1s');

    await consul.stop();
    // The outage is logged once, however many keeper periods it lasts.
    const warning = 'Consul unreachable, will re-register when it is back';
    await pollUntil(() => count(warning) === 1, { timeoutMs: 3 * KEEP_REGISTERED_EVERY_MS + 1000 });
    await new Promise((resolve) => setTimeout(resolve, 2 * KEEP_REGISTERED_EVERY_MS)); // a longer outage
    await consul.start();
    const back = Date.now();
    let after: { service: any; check: any } | undefined;
    await pollUntil(async () => (after = await consul.view(id))?.check?.Status === 'passing', { timeoutMs: 10_000 }).catch(
      (err: Error) => {
        throw new Error(`${err.message}: ${JSON.stringify(lines)}`);
      },
    );
    assert.ok(Date.now() - back <= 10_000, `registered again ${Date.now() - back} ms after Consul was back`);
    assert.deepEqual(stable(after!), stable(before!));
    assert.equal(count('re-registered in Consul'), 1, JSON.stringify(lines));
    assert.equal(count(warning), 1, JSON.stringify(lines));
    const line = lines.find((l) => l.message === 're-registered in Consul')!;
    assert.equal(line.severity, 'INFO');
    assert.equal(lines.find((l) => l.message === warning)!.severity, 'WARN');
  });

  test('after stop and deregistration, a Consul restart does not bring it back', async () => {
    const id = 'pricing-keeper-b';
    const { consul, agent, keeper, count } = await setup(id);
    await pollUntil(async () => (await consul.view(id)) !== undefined, { timeoutMs: 15_000 });

    // What MeshInstance's shutdown does: stop the keeper, then deregister.
    const started = Date.now();
    await keeper.stop();
    await agent.deregister(id);
    assert.ok(Date.now() - started < 1000, `stop + deregister took ${Date.now() - started} ms`);
    assert.equal(await consul.view(id), undefined);

    await consul.stop();
    await consul.start();
    // Several keeper periods: a keeper still running would have registered it again by now.
    const until = Date.now() + 4 * KEEP_REGISTERED_EVERY_MS;
    while (Date.now() < until) {
      assert.equal(await consul.view(id), undefined, 'registered again after stop');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(count('re-registered in Consul'), 0);
  });
});
