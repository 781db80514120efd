// The life of an instance (docs/runtime-contract.md, "Life of an instance"), steps 2-5. Config,
// logging and tracing (step 1) are set up by the entry point before grpc-js is loaded.
import type * as grpc from '@grpc/grpc-js';
import { startAdminServer, type AdminServer, type ReflectionSources } from './admin';
import type { MeshConfig } from './config';
import { buildRegistration, ConsulAgent, RegistrationKeeper, type Language } from './consul';
import type { Logger } from './log';
import { canConnect, hostPort, pollUntil, reserveFreePort } from './net';
import type { Tracing } from './tracing';
import { startXdsServer, type BusinessServer, type ServiceRegistration } from './xds';

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
  private registering = false;
  private registered = false;
  private keeper: RegistrationKeeper | undefined;
  private stopping: Promise<void> | undefined;
  businessPort = 0;
  adminPort = 0;

  constructor(private readonly opts: InstanceOptions) {
    this.consul = new ConsulAgent(opts.config.consulHttpAddr);
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

  /** Steps 2-4. Rejects if start fails, or if shutdown() is called before it is done. */
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
    this.business = startXdsServer({
      host: config.host,
      port,
      services: this.opts.services,
      onBindError: (err) => {
        logger.error('business server failed to bind', { error: err, address });
        void this.shutdown('bind failed').then(() => process.exit(1));
      },
      onServingState: (state) =>
        logger.info('xds serving state changed', { 'rpc.grpc.status_code': state.code, details: state.details }),
    });
    this.businessPort = port;
    logger.info('business server started; waiting for its xDS listener', {
      address,
      listener: `grpc/server?xds.resource.listening_address=${address}`,
    });

    // Step 3: the port accepts connections only once the control plane has sent the listener.
    let nextWaitingLog = WAITING_LOG_EVERY_MS;
    await pollUntil(() => canConnect(config.host, port), {
      intervalMs: 100,
      signal: this.abort.signal,
      onWait: (elapsed) => {
        if (elapsed >= nextWaitingLog) {
          nextWaitingLog += WAITING_LOG_EVERY_MS;
          logger.warn('still waiting for the xDS listener', { waited_s: Math.round(elapsed / 1000) });
        }
      },
    });
    this.admin.setServing('SERVING');
    logger.info('serving', { address, admin_address: hostPort(config.host, this.admin.port) });

    // Step 4: Consul.
    if (config.register) {
      this.registering = true;
      const registration = buildRegistration(config, { business: port, admin: this.admin.port }, this.opts.language);
      await this.consul.register(registration);
      this.abort.signal.throwIfAborted();
      this.registered = true;
      logger.info('registered in consul', { 'service.id': config.instanceId, consul: config.consulHttpAddr });
      // Registers the same body again whenever the agent forgets it (a restarted `consul agent -dev`).
      this.keeper = new RegistrationKeeper(this.consul, registration, logger);
      this.keeper.start();
    }
  }

  /** Step 5, once (later calls return the same promise). It does not exit the process. */
  shutdown(reason: string): Promise<void> {
    this.stopping ??= this.stop(reason);
    return this.stopping;
  }

  private async stop(reason: string): Promise<void> {
    const { config, logger } = this.opts;
    logger.info('shutting down', { reason });
    this.abort.abort(new Error(`shutdown: ${reason}`));
    this.admin?.setServing('NOT_SERVING');
    await this.keeper?.stop(); // before deregistering: nothing may register this instance again
    if (this.registering) {
      // Also when start() was still registering: deregistering an unknown id is harmless.
      try {
        await this.consul.deregister(config.instanceId);
        if (this.registered) logger.info('deregistered from consul', { 'service.id': config.instanceId });
      } catch (err) {
        if (this.registered) logger.warn('consul deregistration failed', { error: err });
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
