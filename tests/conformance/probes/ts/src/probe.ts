// What the probe answers; each failure maps to one rule of the contract's "Errors".
import { Metadata } from '@grpc/grpc-js';
import { trace } from '@opentelemetry/api';
import {
  currentCall,
  defineService,
  invalidArgument,
  notFound,
  propagatedHeaders,
  type ServiceEnv,
  type ServiceRegistration,
  type ServiceSetup,
} from '@polymesh/runtime';
import {
  ConformanceServiceClient,
  ConformanceServiceService,
  Failure,
  type EchoRequest,
  type EchoResponse,
} from '../../../../../gen/ts/polymesh/conformance/v1/conformance';

export const LANGUAGE = 'typescript';

/** Throws as `failure` asks; returns when it asks for nothing. */
export function failAsAsked(failure: Failure, message: string, serviceName: string): void {
  switch (failure) {
    case Failure.FAILURE_INVALID_ARGUMENT:
      throw invalidArgument([{ field: 'message', description: 'rejected as asked' }]);
    case Failure.FAILURE_NOT_FOUND:
      throw notFound(`message ${JSON.stringify(message)} not found`, 'MESSAGE_NOT_FOUND', `${serviceName}.shop.local`, {
        resource_ids: message,
      });
    case Failure.FAILURE_UNEXPECTED:
      throw new Error(`unexpected failure, as asked (message ${JSON.stringify(message)})`);
    default:
      return;
  }
}

function call<Res>(start: (done: (err: Error | null, res?: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => start((err, res) => (err ? reject(err) : resolve(res as Res))));
}

export function conformanceService(env: ServiceEnv<unknown>): ServiceRegistration {
  const { serviceName, instanceId, propagateHeaders } = env.config;
  return defineService(ConformanceServiceService, {
    async echo(request) {
      const deadlineMs = currentCall()?.deadlineMs ?? Infinity;
      const remaining = Number.isFinite(deadlineMs) ? Math.max(0, Math.round(deadlineMs - Date.now())) : 0;
      failAsAsked(request.failure, request.message, serviceName);
      const response: EchoResponse = {
        message: request.message,
        instanceId,
        language: LANGUAGE,
        deadlineRemainingMs: remaining,
        relayed: undefined,
        traceId: trace.getActiveSpan()?.spanContext().traceId ?? '',
        headers: Object.fromEntries([...propagatedHeaders(propagateHeaders)].map(([name, values]) => [name, values.join(', ')])),
      };
      if (request.relayTo !== '') {
        // Through the runtime's dial: xds:///NAME:PORT, under this call's deadline, with its routing
        // headers under the probe's own metadata.
        const peer = env.dialer.dial(ConformanceServiceClient, request.relayTo);
        const relayed: EchoRequest = { message: request.message, failure: Failure.FAILURE_UNSPECIFIED, relayTo: '', relayMetadata: {} };
        const own = new Metadata();
        for (const [name, value] of Object.entries(request.relayMetadata)) own.set(name, value);
        response.relayed = await call<EchoResponse>((done) => peer.echo(relayed, own, done));
      }
      return response;
    },
    async *echoStream(request) {
      for (let index = 0; index < request.count; index++) yield { message: request.message, index };
      failAsAsked(request.failure, request.message, serviceName);
    },
  });
}

export async function setup(env: ServiceEnv<unknown>): Promise<ServiceSetup> {
  return { services: [conformanceService(env)], protoFiles: ['polymesh/conformance/v1/conformance.proto'] };
}
