// Injected failures for demos and tests (docs/runtime-contract.md, "Injected failures"): on the
// business server only, never on the admin port's services, every call waits MESH_INJECT_DELAY_MS
// before its handler runs, unless it ends first (the caller's deadline, or the caller cancelling),
// and then MESH_INJECT_FAILURE_PERCENT of calls are answered UNAVAILABLE. grpc-js's instrumentation
// starts the server span in the handler, after this interceptor: an injected failure makes no span,
// and the delay is not in it (Python's and Go's spans hold both).
import * as grpc from '@grpc/grpc-js';
import type { MeshConfig } from './config';
import type { Logger } from './log';

/** The interceptor MESH_INJECT_* ask for (none by default), said once at WARN. */
export function injectedFailures(config: MeshConfig, logger: Logger): grpc.ServerInterceptor[] {
  const { injectFailurePercent: percent, injectDelayMs: delayMs } = config;
  if (percent === 0 && delayMs === 0) return [];
  logger.warn(`injecting failures: MESH_INJECT_FAILURE_PERCENT=${percent}, MESH_INJECT_DELAY_MS=${delayMs}`);
  return [injectedFailuresInterceptor(percent, delayMs)];
}

/** Delays every call by delayMs, then fails percent % of them UNAVAILABLE. */
export function injectedFailuresInterceptor(percent: number, delayMs: number): grpc.ServerInterceptor {
  return (_method, call) => {
    let timer: NodeJS.Timeout | undefined;
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          // The handler starts once the call's metadata has passed: held back here, it waits.
          onReceiveMetadata(metadata, pass) {
            const decide = () => {
              if (Math.random() * 100 < percent) {
                call.sendStatus({ code: grpc.status.UNAVAILABLE, details: `injected failure (MESH_INJECT_FAILURE_PERCENT=${percent})` });
              } else {
                pass(metadata);
              }
            };
            if (delayMs > 0) timer = setTimeout(decide, delayMs);
            else decide();
          },
          // The deadline ended or the caller cancelled: grpc-js has answered, the handler never runs.
          onCancel() {
            clearTimeout(timer);
          },
        });
      },
    });
  };
}
