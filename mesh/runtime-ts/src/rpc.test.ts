// The runtime's one error mapping and the deadline and routing headers of outbound calls, on a
// plain grpc-js server (xDS plays no part in any): what a caller of a service written on
// defineService() sees.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { outboundCallInterceptor } from './dial';
import { detailsOf, invalidArgument, notFound, ServiceError } from './errors';
import { Logger } from './log';
import { bindAsync } from './net';
import { propagatedHeaders, propagateHeadersInterceptor } from './propagation';
import { currentCall, defineService } from './rpc';

// A small service of the conformance probe's shape, JSON on the wire: the generated code lives in
// the probe's own build, and this test is about the mapping, not about protobuf.
enum Failure {
  FAILURE_UNSPECIFIED = 0,
  FAILURE_INVALID_ARGUMENT = 1,
  FAILURE_NOT_FOUND = 2,
  FAILURE_UNEXPECTED = 3,
}
interface EchoRequest {
  message: string;
  failure: Failure;
  relayTo: string;
  relayMetadata?: Record<string, string>;
}
interface EchoResponse {
  message: string;
  instanceId: string;
  language: string;
  deadlineRemainingMs: number;
  relayed: EchoResponse | undefined;
  traceId: string;
  headers: Record<string, string>;
}
interface EchoStreamRequest {
  message: string;
  count: number;
  failure: Failure;
}
interface EchoStreamResponse {
  message: string;
  index: number;
}
function jsonMethod<Req, Res, Streaming extends boolean>(name: string, responseStream: Streaming) {
  return {
    path: `/test.EchoService/${name}`,
    requestStream: false as const,
    responseStream,
    requestSerialize: (value: Req) => Buffer.from(JSON.stringify(value)),
    requestDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as Req,
    responseSerialize: (value: Res) => Buffer.from(JSON.stringify(value)),
    responseDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as Res,
    originalName: name,
  };
}
const EchoService = {
  echo: jsonMethod<EchoRequest, EchoResponse, false>('Echo', false),
  echoStream: jsonMethod<EchoStreamRequest, EchoStreamResponse, true>('EchoStream', true),
};
interface EchoClient extends grpc.Client {
  echo(request: EchoRequest, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: grpc.requestCallback<EchoResponse>): grpc.ClientUnaryCall;
  echo(request: EchoRequest, callback: grpc.requestCallback<EchoResponse>): grpc.ClientUnaryCall;
  echoStream(request: EchoStreamRequest): grpc.ClientReadableStream<EchoStreamResponse>;
}
const EchoClient = grpc.makeGenericClientConstructor(EchoService, 'test.EchoService') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: Partial<grpc.ClientOptions>,
) => EchoClient;

const lines: Record<string, unknown>[] = [];
const logger = new Logger({ serviceName: 't', instanceId: 't-1', level: 'debug', write: (l) => lines.push(JSON.parse(l)) });

function fail(how: Failure, message: string): void {
  if (how === Failure.FAILURE_INVALID_ARGUMENT) throw invalidArgument([{ field: 'message', description: 'rejected as asked' }]);
  if (how === Failure.FAILURE_NOT_FOUND) {
    throw notFound(`message ${JSON.stringify(message)} not found`, 'MESSAGE_NOT_FOUND', 't.shop.local', { resource_ids: message });
  }
  if (how === Failure.FAILURE_UNEXPECTED) throw new Error(`secret detail of ${message}`);
}

const PROPAGATED = ['x-user-tier'];
let server: grpc.Server;
let client: EchoClient;
/** Relays go to the same server through a client with the runtime's outbound interceptors. */
let relay: EchoClient;

before(async () => {
  server = new grpc.Server();
  const echo = defineService(EchoService, {
    async echo(request: EchoRequest) {
      fail(request.failure, request.message);
      const deadline = currentCall()!.deadlineMs;
      const response: EchoResponse = {
        message: request.message,
        instanceId: 't-1',
        language: 'typescript',
        deadlineRemainingMs: Number.isFinite(deadline) ? deadline - Date.now() : 0,
        relayed: undefined,
        traceId: '',
        headers: Object.fromEntries([...propagatedHeaders(PROPAGATED)].map(([name, values]) => [name, values.join(', ')])),
      };
      if (request.relayTo !== '') {
        const own = new grpc.Metadata();
        for (const [name, value] of Object.entries(request.relayMetadata ?? {})) own.set(name, value);
        response.relayed = await new Promise<EchoResponse>((resolve, reject) =>
          relay.echo({ message: request.message, failure: Failure.FAILURE_UNSPECIFIED, relayTo: '' }, own, {}, (err, res) =>
            err ? reject(err) : resolve(res!),
          ),
        );
      }
      return response;
    },
    async *echoStream(request) {
      for (let index = 0; index < request.count; index++) yield { message: request.message, index };
      fail(request.failure, request.message);
    },
  });
  server.addService(echo.definition, echo.implement(logger));
  const address = `127.0.0.1:${await bindAsync(server, '127.0.0.1:0', grpc.ServerCredentials.createInsecure())}`;
  client = new EchoClient(address, grpc.credentials.createInsecure());
  relay = new EchoClient(address, grpc.credentials.createInsecure(), {
    interceptors: [outboundCallInterceptor(1500), propagateHeadersInterceptor(PROPAGATED)],
  });
});
after(() => {
  client.close();
  relay.close();
  server.forceShutdown();
});

function echo(request: Partial<EchoRequest>, deadline?: Date, metadata = new grpc.Metadata()) {
  const full: EchoRequest = { message: 'm', failure: Failure.FAILURE_UNSPECIFIED, relayTo: '', ...request };
  return new Promise<{ err: grpc.ServiceError | null; res?: EchoResponse }>((resolve) =>
    client.echo(full, metadata, deadline ? { deadline } : {}, (err, res) => resolve({ err, res })),
  );
}

function stream(count: number, failure: Failure) {
  return new Promise<{ messages: EchoStreamResponse[]; err?: grpc.ServiceError }>((resolve) => {
    const messages: EchoStreamResponse[] = [];
    const call = client.echoStream({ message: 's', count, failure });
    call.on('data', (m: EchoStreamResponse) => messages.push(m));
    call.on('error', (err: grpc.ServiceError) => resolve({ messages, err }));
    call.on('end', () => resolve({ messages }));
  });
}

describe('errors, unary and server streaming alike', () => {
  test('INVALID_ARGUMENT carries a BadRequest and the contract message', async () => {
    for (const err of [(await echo({ failure: Failure.FAILURE_INVALID_ARGUMENT })).err, (await stream(2, Failure.FAILURE_INVALID_ARGUMENT)).err]) {
      assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.details, 'invalid request: message: rejected as asked');
      const [detail, ...more] = detailsOf(err);
      assert.equal(more.length, 0);
      assert.equal(detail.kind, 'BadRequest');
      assert.deepEqual(
        detail.kind === 'BadRequest' && detail.value.fieldViolations.map((v) => [v.field, v.description]),
        [['message', 'rejected as asked']],
      );
    }
  });

  test('NOT_FOUND carries an ErrorInfo with resource_ids', async () => {
    const { err } = await echo({ message: 'gone', failure: Failure.FAILURE_NOT_FOUND });
    assert.equal(err?.code, grpc.status.NOT_FOUND);
    assert.equal(err.details, 'message "gone" not found');
    const [detail] = detailsOf(err);
    assert.equal(detail.kind, 'ErrorInfo');
    assert.equal(detail.kind === 'ErrorInfo' && detail.value.metadata.resource_ids, 'gone');
  });

  test('anything else is INTERNAL "internal error", the detail only in the log', async () => {
    lines.length = 0;
    const unary = (await echo({ message: 'u', failure: Failure.FAILURE_UNEXPECTED })).err;
    const streamed = await stream(3, Failure.FAILURE_UNEXPECTED);
    assert.deepEqual(streamed.messages.map((m) => m.index), [0, 1, 2], 'messages before the failure arrive');
    for (const err of [unary, streamed.err]) {
      assert.equal(err?.code, grpc.status.INTERNAL);
      assert.equal(err.details, 'internal error');
      assert.deepEqual(detailsOf(err), []);
      assert.ok(!JSON.stringify(err.metadata.getMap()).includes('secret'));
    }
    const logged = lines.filter((l) => l.message === 'unexpected error');
    assert.equal(logged.length, 2);
    assert.ok(logged.every((l) => l.severity === 'ERROR' && JSON.stringify(l.error).includes('secret detail')));
  });

  test('a stream without failure ends OK after its messages', async () => {
    const { messages, err } = await stream(4, Failure.FAILURE_UNSPECIFIED);
    assert.equal(err, undefined);
    assert.deepEqual(messages.map((m) => m.index), [0, 1, 2, 3]);
  });

  test('a ServiceError thrown synchronously is still mapped', async () => {
    const svc = defineService(EchoService, {
      echo: () => {
        throw new ServiceError(grpc.status.FAILED_PRECONDITION, 'not now');
      },
      // eslint-disable-next-line require-yield
      async *echoStream() {
        return;
      },
    });
    const s = new grpc.Server();
    s.addService(svc.definition, svc.implement(logger));
    const port = await bindAsync(s, '127.0.0.1:0', grpc.ServerCredentials.createInsecure());
    const c = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      c.echo({ message: '', failure: 0, relayTo: '' }, (e) => resolve(e)),
    );
    c.close();
    s.forceShutdown();
    assert.equal(err?.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(err.details, 'not now');
  });
});

describe('the deadline of an outbound call', () => {
  test('is the incoming call’s deadline when it has one', async () => {
    const { err, res } = await echo({ relayTo: 'self' }, new Date(Date.now() + 30_000));
    assert.equal(err, null);
    assert.ok(res!.deadlineRemainingMs > 25_000, `outer ${res!.deadlineRemainingMs}`);
    const relayed = res!.relayed!.deadlineRemainingMs;
    assert.ok(relayed > 25_000 && relayed <= res!.deadlineRemainingMs, `relayed ${relayed}`);
  });

  test('is MESH_CALL_TIMEOUT when the incoming call has none', async () => {
    const { err, res } = await echo({ relayTo: 'self' });
    assert.equal(err, null);
    assert.equal(res!.deadlineRemainingMs, 0);
    const relayed = res!.relayed!.deadlineRemainingMs;
    assert.ok(relayed > 1000 && relayed <= 1500, `relayed ${relayed}`);
  });
});

describe('the routing headers of an outbound call', () => {
  const incoming = () => {
    const metadata = new grpc.Metadata();
    metadata.set('x-user-tier', 'beta');
    metadata.set('x-canary', 'yes');
    return metadata;
  };

  test('are the listed ones of the incoming call, and only those', async () => {
    const { err, res } = await echo({ relayTo: 'self' }, undefined, incoming());
    assert.equal(err, null);
    assert.deepEqual(res!.headers, { 'x-user-tier': 'beta' });
    assert.deepEqual(res!.relayed!.headers, { 'x-user-tier': 'beta' });
  });

  test('give way to a value the call sets itself', async () => {
    const { res } = await echo({ relayTo: 'self', relayMetadata: { 'x-user-tier': 'gold' } }, undefined, incoming());
    assert.deepEqual(res!.relayed!.headers, { 'x-user-tier': 'gold' });
  });

  test('are none when the incoming call has none', async () => {
    const { res } = await echo({ relayTo: 'self' });
    assert.deepEqual([res!.headers, res!.relayed!.headers], [{}, {}]);
  });
});
