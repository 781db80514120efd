// Registration in the local Consul agent over its HTTP agent API (docs/runtime-contract.md,
// "Life of an instance", steps 4 and 5).
import type { MeshConfig } from './config';
import type { Logger } from './log';
import { hostPort } from './net';

/**
 * How often the keeper asks the local agent whether it still knows this instance. A `consul agent
 * -dev` that restarts forgets every registration; without registering again, the instance would
 * drop out of the mesh's endpoints.
 */
export const KEEP_REGISTERED_EVERY_MS = 2_000;
/** Registration retries while Consul cannot be reached: 100 ms, doubling, at most 5 s apart. */
export const REGISTER_RETRY_FIRST_MS = 100;
export const REGISTER_RETRY_MAX_MS = 5_000;

export type Language = 'python' | 'go' | 'typescript';

/** The body of PUT /v1/agent/service/register, in Consul's own keys. */
export interface Registration {
  ID: string;
  Name: string;
  Address: string;
  Port: number;
  Tags: string[];
  Meta: Record<string, string>;
  Check: {
    Name: string;
    GRPC: string;
    GRPCUseTLS: boolean;
    Interval: string;
    Timeout: string;
    DeregisterCriticalServiceAfter: string;
  };
}

export function buildRegistration(config: MeshConfig, ports: { business: number; admin: number }, language: Language): Registration {
  return {
    ID: config.instanceId,
    Name: config.serviceName,
    Address: config.host,
    Port: ports.business,
    Tags: [config.serviceVersion, language],
    Meta: { version: config.serviceVersion, language, admin_port: String(ports.admin), protocol: 'grpc' },
    Check: {
      Name: `gRPC health on admin port ${ports.admin}`,
      GRPC: hostPort(config.host, ports.admin),
      GRPCUseTLS: false,
      Interval: '1s',
      Timeout: '1s',
      // Consul's minimum: it raises anything lower to 1m.
      DeregisterCriticalServiceAfter: '1m',
    },
  };
}

export class ConsulAgent {
  /** `baseUrl` like http://127.0.0.1:8500 (MeshConfig.consulHttpAddr); `token` Consul's ACL token ('' for none). */
  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs = 5000,
    private readonly token = '',
  ) {}

  private async request(method: string, path: string, signal?: AbortSignal, body?: unknown): Promise<Response> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.token !== '') headers['x-consul-token'] = this.token;
    const res = await fetch(`${this.baseUrl}${path}`, {
      method,
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      headers,
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    await res.arrayBuffer();
    return res;
  }

  private static check(res: Response, what: string): void {
    if (!res.ok) throw new Error(`${what}: HTTP ${res.status}`);
  }

  async register(body: Registration, signal?: AbortSignal): Promise<void> {
    ConsulAgent.check(await this.request('PUT', '/v1/agent/service/register', signal, body), 'consul register');
  }

  /** Whether the agent knows service `id` (404: it does not). Rejects when Consul cannot answer. */
  async hasService(id: string, signal?: AbortSignal): Promise<boolean> {
    const res = await this.request('GET', `/v1/agent/service/${encodeURIComponent(id)}`, signal);
    if (res.status === 404) return false;
    ConsulAgent.check(res, `consul GET /v1/agent/service/${id}`);
    return true;
  }

  async deregister(id: string): Promise<void> {
    ConsulAgent.check(await this.request('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`), 'consul deregister');
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Keeps one registration in the local agent: registers it (retrying with backoff while Consul
 * cannot be reached, saying so once), then every `everyMs` asks whether the agent still knows the
 * instance and registers the very same body again when it does not. stop() ends it before the
 * shutdown deregisters, so nothing registers again after.
 */
export class RegistrationKeeper {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private outage = false;
  /** True once Consul has accepted the registration at least once. */
  registered = false;

  constructor(
    private readonly agent: ConsulAgent,
    private readonly body: Registration,
    private readonly logger: Logger,
    private readonly consulAddr: string,
    private readonly everyMs = KEEP_REGISTERED_EVERY_MS,
  ) {}

  start(): void {
    this.running ??= this.run();
  }

  /** Ends the keeper; an in-flight request is aborted, so this never waits on Consul. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private get fields() {
    return { 'service.id': this.body.ID, consul: this.consulAddr };
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    for (let wait = REGISTER_RETRY_FIRST_MS; !signal.aborted; wait = Math.min(wait * 2, REGISTER_RETRY_MAX_MS)) {
      try {
        await this.agent.register(this.body, signal);
        this.registered = true;
        this.logger.info('registered in consul', this.fields);
        break;
      } catch (err) {
        if (signal.aborted) return;
        if (!this.outage) {
          this.logger.warn(`consul unreachable at ${this.consulAddr}; will register when it is back`, { ...this.fields, error: err });
        }
        this.outage = true;
        await sleep(wait, signal);
      }
    }
    this.outage = false;
    while (!signal.aborted) {
      await sleep(this.everyMs, signal);
      if (!signal.aborted) await this.check(signal);
    }
  }

  private async check(signal: AbortSignal): Promise<void> {
    try {
      if (!(await this.agent.hasService(this.body.ID, signal))) {
        await this.agent.register(this.body, signal);
        this.logger.info('re-registered in consul', this.fields);
      }
      if (this.outage) this.logger.info(`consul reachable again at ${this.consulAddr}`, this.fields);
      this.outage = false;
    } catch (err) {
      if (signal.aborted) return;
      if (!this.outage) this.logger.warn(`consul unreachable at ${this.consulAddr}; will register when it is back`, { ...this.fields, error: err });
      this.outage = true;
    }
  }
}
