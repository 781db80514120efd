// Routing headers travel with the call (docs/runtime-contract.md, "Calls between services"): an
// outbound call made while handling an RPC carries the values of every header
// MESH_PROPAGATE_HEADERS lists that the incoming call came with (rpc.ts keeps the call being
// handled, its metadata included), unless the call sets that header itself: its own value wins.
// A call made outside any RPC gets none.
import * as grpc from '@grpc/grpc-js';
import { currentCall } from './rpc';

/** The headers of `names` the call being handled came with, each with its values in order. */
export function propagatedHeaders(names: readonly string[]): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const incoming = currentCall()?.call.metadata;
  for (const name of names) {
    // Only binary (-bin) values are Buffers, and the configuration refuses those names.
    const values = incoming?.get(name).map(String) ?? [];
    if (values.length > 0) found.set(name, values);
  }
  return found;
}

/** Gives every outbound call the incoming call's headers of `names` it does not set itself. */
export function propagateHeadersInterceptor(names: readonly string[]): grpc.Interceptor {
  return (options, nextCall) => {
    const propagated = propagatedHeaders(names); // read here: this runs in the caller's context
    return new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, nextStart) {
        for (const [name, values] of propagated) {
          if (metadata.get(name).length > 0) continue;
          for (const value of values) metadata.add(name, value);
        }
        nextStart(metadata, listener);
      },
    });
  };
}
