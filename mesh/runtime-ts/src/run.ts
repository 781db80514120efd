// runService(): what a TypeScript service's main does, and all it does (docs/runtime-contract.md).
//
// This entry point (`@polymesh/runtime/run`) must not load @grpc/grpc-js: tracing is set up first,
// and gRPC is instrumented only if it is loaded after that. So a service's main imports only this,
// and loads its own modules (which may import grpc-js and `@polymesh/runtime`) inside `setup`
// with import():
//
//   runService({ name: 'pricing', readConfig: readPricingConfig,
//                setup: async (env) => (await import('./pricing/setup')).setup(env) });
import { ConfigError, loadConfig, type EnvReader, type MeshConfig } from './config';
import type { Dialer } from './dial';
import { Logger } from './log';
import type { ReflectionSources } from './admin';
import type { ServiceRegistration } from './rpc';
import { setupTracing } from './tracing';

/** Exit codes of the contract: 2 for a bad configuration, 1 for a failed start. */
export const EXIT_BAD_CONFIG = 2;
export const EXIT_START_FAILED = 1;

/** What the runtime hands to a service's setup. */
export interface ServiceEnv<S> {
  readonly config: MeshConfig;
  /** The service's own variables, as its readConfig returned them. */
  readonly settings: S;
  readonly logger: Logger;
  /** Clients of other mesh services: dial(CatalogServiceClient, 'catalog'). Closed at shutdown. */
  readonly dialer: Dialer;
}

/** What a service's setup returns. */
export interface ServiceSetup {
  services: ServiceRegistration[];
  /** .proto files (relative to protos/) declaring the services, for reflection. */
  protoFiles: string[];
  /** Closes the service's own resources after the servers have stopped. */
  close?: () => Promise<void> | void;
}

export interface ServiceSpec<S> {
  /** The service's name unless OTEL_SERVICE_NAME says otherwise. */
  name: string;
  /** The service's own variables, read with the same reader so one line names every bad one. */
  readConfig?: (r: EnvReader) => S;
  /** Extra fields of the first log line. */
  describe?: (settings: S) => Record<string, unknown>;
  setup: (env: ServiceEnv<S>) => Promise<ServiceSetup>;
}

/** Runs the instance until SIGTERM or SIGINT, then exits 0 (2 on bad config, 1 on a failed start). */
export function runService<S = undefined>(spec: ServiceSpec<S>): void {
  void run(spec).catch((err: unknown) => {
    process.stderr.write(`fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_START_FAILED);
  });
}

async function run<S>(spec: ServiceSpec<S>): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env, spec.name, spec.readConfig ?? ((() => undefined) as unknown as (r: EnvReader) => S));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\n');
      process.exit(EXIT_BAD_CONFIG);
    }
    throw err;
  }
  const { mesh, service: settings } = config;
  const logger = new Logger({ serviceName: mesh.serviceName, instanceId: mesh.instanceId, level: mesh.logLevel });
  const tracing = setupTracing(mesh);

  // Only now may grpc-js be loaded.
  const { MeshInstance } = await import('./instance');
  const { Dialer } = await import('./dial');
  const { PROTO_INCLUDE_DIRS } = await import('./paths');

  const dialer = new Dialer(mesh.servicePorts, mesh.callTimeoutSeconds, mesh.propagateHeaders, mesh.xds ? undefined : mesh.namespace);
  logger.info('starting', {
    'service.version': mesh.serviceVersion,
    namespace: mesh.namespace,
    service_ports: mesh.servicePorts,
    ...spec.describe?.(settings as S),
  });
  let setup: ServiceSetup;
  try {
    setup = await spec.setup({ config: mesh, settings: settings as S, logger, dialer });
  } catch (err) {
    logger.error('setup failed', { error: err });
    await tracing.shutdown();
    process.exit(EXIT_START_FAILED);
  }
  const reflection: ReflectionSources = { protoFiles: setup.protoFiles, includeDirs: [...PROTO_INCLUDE_DIRS] };
  const instance = new MeshInstance({
    config: mesh,
    logger,
    tracing,
    language: 'typescript',
    services: setup.services,
    reflection,
    close: async () => {
      dialer.close();
      await setup.close?.();
    },
  });
  instance.installSignalHandlers();
  try {
    await instance.start();
  } catch (err) {
    if (instance.shuttingDown) return; // a signal arrived during start; its handler exits 0
    logger.error('start failed', { error: err });
    await instance.shutdown('start failed');
    process.exit(EXIT_START_FAILED);
  }
}
export type { EnvReader, MeshConfig } from './config';
