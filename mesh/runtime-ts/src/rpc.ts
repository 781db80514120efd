// How a service's handlers are served: one place maps every handler outcome to a gRPC status, the
// same way for unary and server-streaming RPCs (docs/runtime-contract.md, "Errors"), and runs the
// handler inside its incoming call's scope, so outbound calls inherit its deadline (dial.ts).
//
// A service writes plain async functions; defineService() checks them against the generated
// service definition and adapts them to grpc-js. A handler never touches callbacks or statuses:
// it returns (or yields) responses, or throws.
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  status as Code,
  type CallOptions,
  type MethodDefinition,
  type ServerUnaryCall,
  type ServerWritableStream,
  type StatusObject,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { INTERNAL_MESSAGE, isCallError, passThrough, ServiceError } from './errors';
import type { Logger } from './log';

/** A call being served (grpc-js does not export its name for it). */
export type ServerSurfaceCall = NonNullable<CallOptions['parent']>;

/** The incoming call an outbound call is made for; its deadline bounds the outbound call. */
export interface IncomingCall {
  readonly call: ServerSurfaceCall;
  /** The incoming deadline, ms since the epoch; Infinity when the caller set none. */
  readonly deadlineMs: number;
}

const incoming = new AsyncLocalStorage<IncomingCall>();

/** The call being handled in this async context, if any. */
export function currentCall(): IncomingCall | undefined {
  return incoming.getStore();
}

function deadlineMsOf(call: ServerSurfaceCall): number {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : Infinity;
}

/** Codes of a failed downstream call that pass through unchanged, so that callers may retry. */
export const PASSED_THROUGH = new Set<Code>([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED, Code.CANCELLED]);

/** The one mapping of a handler's failure to what its caller sees. */
export function toStatus(err: unknown, logger: Logger, method: string): Partial<StatusObject> {
  if (err instanceof ServiceError) {
    logger.debug('rpc returned an error', { 'rpc.method': method, 'rpc.grpc.status_code': err.code, error: err.message });
    return err.toStatus();
  }
  if (isCallError(err) && PASSED_THROUGH.has(err.code)) {
    logger.warn('downstream call failed; passing its status on', { 'rpc.method': method, 'rpc.grpc.status_code': err.code, error: err.details });
    return passThrough(err).toStatus();
  }
  // Logged here, inside the handler's context, so the line carries the server span's trace id.
  logger.error('unexpected error', { 'rpc.method': method, error: err });
  return { code: Code.INTERNAL, details: INTERNAL_MESSAGE };
}

export type UnaryHandler<Req, Res> = (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>;
export type ServerStreamHandler<Req, Res> = (request: Req, call: ServerWritableStream<Req, Res>) => AsyncIterable<Res>;

/**
 * The handlers a generated service definition (e.g. ConformanceServiceService) asks for: a unary
 * method is an async function, a server-streaming one an async generator. Client and
 * bidirectional streaming are not supported yet (no service has them).
 */
export type Handlers<D> = {
  [M in keyof D]: D[M] extends MethodDefinition<infer Req, infer Res>
    ? D[M] extends { requestStream: false; responseStream: false }
      ? UnaryHandler<Req, Res>
      : D[M] extends { requestStream: false; responseStream: true }
        ? ServerStreamHandler<Req, Res>
        : never
    : never;
};

export interface ServiceRegistration {
  /** Full name, e.g. shop.pricing.v1.PricingService (health and Consul use it). */
  readonly name: string;
  readonly definition: Record<string, MethodDefinition<any, any>>;
  /** Builds the grpc-js implementation; the runtime passes its logger. */
  implement(logger: Logger): UntypedServiceImplementation;
}

function serveUnary<Req, Res>(handler: UnaryHandler<Req, Res>, logger: Logger, method: string): UntypedHandleCall {
  return (call: ServerUnaryCall<Req, Res>, callback: (err: Partial<StatusObject> | null, res?: Res) => void) => {
    const scope: IncomingCall = { call, deadlineMs: deadlineMsOf(call) };
    incoming.run(scope, () => {
      let pending: Promise<Res>;
      try {
        pending = handler(call.request, call);
      } catch (err) {
        pending = Promise.reject(err);
      }
      pending.then(
        (response) => callback(null, response),
        (err: unknown) => callback(toStatus(err, logger, method)),
      );
    });
  };
}

/** Resolves once the stream can take more (or at once when it can). */
function drained(call: ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off('drain', done);
      call.off('cancelled', done);
      resolve();
    };
    call.once('drain', done);
    call.once('cancelled', done);
  });
}

function serveServerStream<Req, Res>(handler: ServerStreamHandler<Req, Res>, logger: Logger, method: string): UntypedHandleCall {
  return (call: ServerWritableStream<Req, Res>) => {
    const scope: IncomingCall = { call, deadlineMs: deadlineMsOf(call) };
    incoming.run(scope, async () => {
      try {
        for await (const response of handler(call.request, call)) {
          if (call.cancelled) return;
          if (!call.write(response)) await drained(call as ServerWritableStream<unknown, unknown>);
        }
        call.end();
      } catch (err) {
        if (call.cancelled) return;
        // grpc-js sends a status emitted as 'error' after the messages already written.
        call.emit('error', toStatus(err, logger, method));
      }
    });
  };
}

function serviceNameOf(definition: Record<string, MethodDefinition<any, any>>): string {
  const first = Object.values(definition)[0];
  if (!first) throw new Error('a service definition without methods');
  return first.path.split('/')[1];
}

/**
 * A business service for the runtime to serve: the generated definition and one handler per
 * method. Every handler's failure is mapped by toStatus(); every handler runs in its call's scope.
 */
export function defineService<D extends Record<string, MethodDefinition<any, any>>>(
  definition: D,
  handlers: Handlers<D>,
): ServiceRegistration {
  const name = serviceNameOf(definition);
  for (const [key, method] of Object.entries(definition)) {
    if (method.requestStream) throw new Error(`${method.path}: client streaming is not supported by the runtime yet`);
    if (typeof (handlers as Record<string, unknown>)[key] !== 'function') throw new Error(`${method.path}: no handler`);
  }
  return {
    name,
    definition,
    implement(logger) {
      const implementation: UntypedServiceImplementation = {};
      for (const [key, method] of Object.entries(definition)) {
        const handler = (handlers as Record<string, unknown>)[key];
        implementation[key] = method.responseStream
          ? serveServerStream(handler as ServerStreamHandler<unknown, unknown>, logger, method.path)
          : serveUnary(handler as UnaryHandler<unknown, unknown>, logger, method.path);
      }
      return implementation;
    },
  };
}
