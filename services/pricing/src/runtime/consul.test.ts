import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MeshConfig } from './config';
import { buildRegistration } from './consul';

test('the registration follows the contract', () => {
  const config = {
    serviceName: 'pricing',
    serviceVersion: 'v2',
    instanceId: 'pricing-v2-1',
    host: '127.0.0.1',
  } as MeshConfig;
  assert.deepEqual(buildRegistration(config, { business: 7001, admin: 7002 }, 'typescript'), {
    id: 'pricing-v2-1',
    name: 'pricing',
    address: '127.0.0.1',
    port: 7001,
    tags: ['v2', 'typescript'],
    meta: { version: 'v2', language: 'typescript', admin_port: '7002' },
    check: {
      name: 'gRPC health on admin port 7002',
      grpc: '127.0.0.1:7002',
      grpcusetls: false,
      interval: '1s',
      timeout: '1s',
      deregistercriticalserviceafter: '1m',
    },
  });
});
