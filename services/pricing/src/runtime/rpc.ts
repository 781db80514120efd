// One place where handler outcomes become gRPC statuses: RpcError goes back as it is; anything
// else is INTERNAL "internal error" to the caller and the detail goes to the log with the trace id.
import { status as Code, type handleUnaryCall, type ServerUnaryCall, type StatusObject } from '@grpc/grpc-js';
import { INTERNAL_MESSAGE, RpcError } from './errors';
import type { Logger } from './log';

export function toServerError(err: unknown, logger: Logger, method: string): Partial<StatusObject> {
  if (err instanceof RpcError) {
    logger.debug('rpc returned an error', { 'rpc.method': method, 'rpc.grpc.status_code': err.code, error: err.details });
    return err;
  }
  logger.error('unexpected error', { 'rpc.method': method, error: err });
  return { code: Code.INTERNAL, details: INTERNAL_MESSAGE };
}

/** A unary handler from an async function. */
export function unary<Req, Res>(
  logger: Logger,
  method: string,
  fn: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let pending: Promise<Res>;
    try {
      pending = fn(call.request, call);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (response) => callback(null, response),
      (err: unknown) => callback(toServerError(err, logger, method)),
    );
  };
}
