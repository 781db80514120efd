// Registration in the local Consul agent (agent API, as the contract's step 4 describes).
import { EventEmitter } from 'node:events';
import Consul from 'consul';
import type { MeshConfig } from './config';
import type { Logger } from './log';

/**
 * How often the keeper asks the local agent whether it still knows this instance. A `consul agent
 * -dev` that restarts (or any agent that loses its state) forgets every registration; without
 * re-registering, the instance would drop out of the mesh's endpoints.
 */
export const KEEP_REGISTERED_EVERY_MS = 2_000;

export type Language = 'python' | 'go' | 'typescript';

/** The agent's /v1/agent/service/register body, in the consul client's key style. */
export interface ServiceDefinitionBody {
  id: string;
  name: string;
  address: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  check: {
    name: string;
    grpc: string;
    grpcusetls: boolean;
    interval: string;
    timeout: string;
    deregistercriticalserviceafter: string;
  };
}

export function buildRegistration(
  config: MeshConfig,
  ports: { business: number; admin: number },
  language: Language,
): ServiceDefinitionBody {
  const admin = config.host.includes(':') ? `[${config.host}]:${ports.admin}` : `${config.host}:${ports.admin}`;
  return {
    id: config.instanceId,
    name: config.serviceName,
    address: config.host,
    port: ports.business,
    tags: [config.serviceVersion, language],
    meta: { version: config.serviceVersion, language, admin_port: String(ports.admin) },
    check: {
      name: `gRPC health on admin port ${ports.admin}`,
      grpc: admin,
      grpcusetls: false,
      interval: '1s',
      timeout: '1s',
      deregistercriticalserviceafter: '1m',
    },
  };
}

/** The consul client (papi) cancels a request when its `ctx` emits 'cancel'; it knows no AbortSignal. */
function cancelContext(signal: AbortSignal): EventEmitter {
  const ctx = new EventEmitter();
  signal.addEventListener('abort', () => ctx.emit('cancel'), { once: true });
  return ctx;
}

export class ConsulAgent {
  private readonly consul: Consul;
  private readonly origin: string;

  /** `baseUrl` like http://127.0.0.1:8500 (MeshConfig.consulHttpAddr). */
  constructor(
    baseUrl: string,
    private readonly timeoutMs = 5000,
  ) {
    const url = new URL(baseUrl);
    this.origin = url.origin;
    const secure = url.protocol === 'https:';
    this.consul = new Consul({ host: url.hostname, port: Number(url.port || (secure ? 443 : 80)), secure });
  }

  /** `signal` aborts the request (and refuses to send it once aborted). */
  async register(body: ServiceDefinitionBody, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    // A top-level `timeout` is the HTTP request's own timeout in the consul client.
    const options = { ...body, timeout: this.timeoutMs, ...(signal && { ctx: cancelContext(signal) }) };
    await this.consul.agent.service.register(options as unknown as typeof body);
  }

  /** Whether the agent knows service `id` (404: it does not). Rejects when Consul cannot answer. */
  async hasService(id: string, signal?: AbortSignal): Promise<boolean> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const res = await fetch(`${this.origin}/v1/agent/service/${encodeURIComponent(id)}`, {
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    await res.arrayBuffer();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw new Error(`GET /v1/agent/service/${id}: HTTP ${res.status}`);
  }

  async deregister(id: string): Promise<void> {
    await this.consul.agent.service.deregister({ id, timeout: this.timeoutMs } as { id: string });
  }
}

/**
 * Keeps one registration in the local agent: every `everyMs` it asks whether the agent still knows
 * the instance and, when it does not, registers the very same body again. Started after the first
 * registration; stop() ends it before the shutdown deregisters, so nothing registers again after.
 */
export class RegistrationKeeper {
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private outage = false;

  constructor(
    private readonly agent: ConsulAgent,
    private readonly body: ServiceDefinitionBody,
    private readonly logger: Logger,
    private readonly everyMs = KEEP_REGISTERED_EVERY_MS,
  ) {}

  start(): void {
    if (this.abort.signal.aborted || this.timer) return;
    this.schedule();
  }

  /** Ends the keeper; an in-flight request is aborted, so this never waits on Consul. */
  async stop(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    if (this.abort.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.running = this.check().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, this.everyMs);
    this.timer.unref(); // the servers keep the process alive, not the keeper
  }

  private async check(): Promise<void> {
    const signal = this.abort.signal;
    const fields = { 'service.id': this.body.id };
    try {
      if (!(await this.agent.hasService(this.body.id, signal))) {
        await this.agent.register(this.body, signal);
        this.logger.info('re-registered in Consul', fields);
      }
      if (this.outage) this.logger.info('Consul is reachable again', fields);
      this.outage = false;
    } catch (err) {
      if (signal.aborted) return;
      if (!this.outage) this.logger.warn('Consul unreachable, will re-register when it is back', { ...fields, error: err });
      this.outage = true;
    }
  }
}
