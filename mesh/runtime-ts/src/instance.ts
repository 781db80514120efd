// The life of an instance (docs/runtime-contract.md, "Life of an instance"), steps 2-7. Config,
// logging and tracing (step 1) are set up by runService() before grpc-js is loaded.
import type * as grpc from '@grpc/grpc-js';
import { startAdminServer, type AdminServer, type ReflectionSources } from './admin';
import type { MeshConfig } from './config';
import { buildRegistration, ConsulAgent, RegistrationKeeper, type Language } from './consul';
import { injectedFailures } from './injection';
import type { Logger } from './log';
import { hostPort, reserveFreePort } from './net';
import type { ServiceRegistration } from './rpc';
import type { Tracing } from './tracing';
import { serverListenerName, startPlainServer, startXdsServer, type BusinessServer } from './xds';

/** How often the wait for the xDS listener says it is still waiting. */
const WAITING_LOG_EVERY_MS = 10_000;

export interface InstanceOptions {
  config: MeshConfig;
  logger: Logger;
  tracing: Tracing;
  language: Language;
  services: readonly ServiceRegistration[];
  reflection: ReflectionSources;
  /** Closes the service's own resources (client channels...) after the servers have stopped. */
  close?: () => Promise<void> | void;
}

function tryShutdown(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => server.tryShutdown(() => resolve()));
}

/** Graceful stop with a deadline, then force. Resolves true when the drain finished in time. */
async function drain(server: grpc.Server, deadlineMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const forced = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => {
      server.forceShutdown();
      resolve(false);
    }, deadlineMs);
  });
  try {
    return await Promise.race([tryShutdown(server).then(() => true), forced]);
  } finally {
    clearTimeout(timer);
  }
}

export class MeshInstance {
  private readonly abort = new AbortController();
  private readonly consul: ConsulAgent;
  private admin: AdminServer | undefined;
  private business: BusinessServer | undefined;
  private keeper: RegistrationKeeper | undefined;
  private stopping: Promise<void> | undefined;
  businessPort = 0;
  adminPort = 0;

  constructor(private readonly opts: InstanceOptions) {
    this.consul = new ConsulAgent(opts.config.consulHttpAddr, undefined, opts.config.consulToken);
  }

  get shuttingDown(): boolean {
    return this.stopping !== undefined;
  }

  /** SIGTERM and SIGINT run shutdown() and then exit 0, also while start() is still waiting. */
  installSignalHandlers(exit: (code: number) => void = (code) => process.exit(code)): void {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        void this.shutdown(signal).then(() => exit(0));
      });
    }
  }

  /** Steps 2-4. Resolves once serving (registration goes on in the background); rejects on shutdown first. */
  async start(): Promise<void> {
    const { config, logger } = this.opts;
    // Step 2: the admin server first, so health answers NOT_SERVING while we wait for xDS.
    this.admin = await startAdminServer({
      host: config.host,
      port: config.adminPort,
      serviceNames: this.opts.services.map((s) => s.name),
      reflection: this.opts.reflection,
    });
    this.adminPort = this.admin.port;
    logger.info('admin server listening', { address: hostPort(config.host, this.admin.port) });
    this.abort.signal.throwIfAborted();

    const port = config.port === 0 ? await reserveFreePort(config.host) : config.port;
    const address = hostPort(config.host, port);
    const listener = serverListenerName(config.host, port);
    let firstServing: () => void;
    const served = new Promise<void>((resolve) => (firstServing = resolve));
    let serving = false;
    this.business = (config.xds ? startXdsServer : startPlainServer)({
      host: config.host,
      port,
      services: this.opts.services,
      interceptors: injectedFailures(config, logger),
      logger,
      onBindError: (err) => {
        logger.error('business server failed to bind', { error: err, address });
        void this.shutdown('bind failed').then(() => process.exit(1));
      },
      // Steps 3 and 6: health follows the listener, SERVING while it is in place.
      onServing: (now, details) => {
        if (this.shuttingDown || now === serving) return;
        serving = now;
        this.admin?.setServing(now ? 'SERVING' : 'NOT_SERVING');
        if (now) {
          logger.info('serving', { address, admin_address: hostPort(config.host, this.adminPort), listener });
          firstServing();
        } else {
          logger.warn('xds listener lost; not serving', { address, listener, details });
        }
      },
    });
    this.businessPort = port;
    logger.info('business server started; waiting for its xDS listener', { address, listener });

    const waited = Date.now();
    const reminder = setInterval(() => {
      logger.warn('still waiting for the xDS listener', { listener, waited_s: Math.round((Date.now() - waited) / 1000) });
    }, WAITING_LOG_EVERY_MS);
    try {
      await Promise.race([
        served,
        new Promise<never>((_, reject) => {
          const signal = this.abort.signal;
          if (signal.aborted) reject(signal.reason as Error);
          signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
        }),
      ]);
    } finally {
      clearInterval(reminder);
    }

    // Steps 4 and 5: registration, retried while Consul is down, then kept.
    if (config.register) {
      const registration = buildRegistration(config, { business: port, admin: this.admin.port }, this.opts.language);
      this.keeper = new RegistrationKeeper(this.consul, registration, logger, config.consulHttpAddr);
      this.keeper.start();
    }
  }

  /** Step 7, once (later calls return the same promise). It does not exit the process. */
  shutdown(reason: string): Promise<void> {
    this.stopping ??= this.stop(reason);
    return this.stopping;
  }

  private async stop(reason: string): Promise<void> {
    const { config, logger } = this.opts;
    logger.info('shutting down', { reason });
    this.abort.abort(new Error(`shutdown: ${reason}`));
    this.admin?.setServing('NOT_SERVING');
    if (this.keeper) {
      await this.keeper.stop(); // before deregistering: nothing may register this instance again
      try {
        // Also when the first registration was still being retried: an unknown id is harmless.
        await this.consul.deregister(config.instanceId);
        if (this.keeper.registered) logger.info('deregistered from consul', { 'service.id': config.instanceId });
      } catch (err) {
        if (this.keeper.registered) logger.warn('consul deregistration failed', { error: err });
      }
    }
    if (this.business) {
      const drained = await drain(this.business.server, config.drainTimeoutSeconds * 1000);
      if (drained) logger.info('business server drained');
      else logger.warn('drain timeout reached; in-flight RPCs cancelled', { drain_timeout_s: config.drainTimeoutSeconds });
    }
    // Health Watch streams never end by themselves, so the admin server is stopped at once.
    this.admin?.server.forceShutdown();
    try {
      await this.opts.close?.();
    } catch (err) {
      logger.warn('closing service resources failed', { error: err });
    }
    logger.info('stopped');
    try {
      await this.opts.tracing.shutdown();
    } catch (err) {
      logger.warn('tracing shutdown failed', { error: err });
    }
  }
}
