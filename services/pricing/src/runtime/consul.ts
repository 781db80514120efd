// Registration in the local Consul agent (agent API, as the contract's step 4 describes).
import Consul from 'consul';
import type { MeshConfig } from './config';

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
      deregistercriticalserviceafter: '30s',
    },
  };
}

export class ConsulAgent {
  private readonly consul: Consul;

  /** `baseUrl` like http://127.0.0.1:8500 (MeshConfig.consulHttpAddr). */
  constructor(
    baseUrl: string,
    private readonly timeoutMs = 5000,
  ) {
    const url = new URL(baseUrl);
    const secure = url.protocol === 'https:';
    this.consul = new Consul({ host: url.hostname, port: Number(url.port || (secure ? 443 : 80)), secure });
  }

  async register(body: ServiceDefinitionBody): Promise<void> {
    // A top-level `timeout` is the HTTP request's own timeout in the consul client.
    const options = { ...body, timeout: this.timeoutMs };
    await this.consul.agent.service.register(options as unknown as typeof body);
  }

  async deregister(id: string): Promise<void> {
    await this.consul.agent.service.deregister({ id, timeout: this.timeoutMs } as { id: string });
  }
}
