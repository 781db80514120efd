// Clients of other mesh services (docs/runtime-contract.md, "Targets" and "Calls between services").
// dial(Client, "catalog") targets xds:///catalog:PORT, PORT from MESH_SERVICE_PORTS, with xDS
// channel credentials (insecure fallback). Every call made on it:
// - made while handling an RPC, has that call as parent: its deadline (at most) and its
//   cancellation propagate (grpc-js's own parent/propagate mechanism);
// - made outside of any RPC, gets MESH_CALL_TIMEOUT;
// - waits for a peer that is restarting (wait_for_ready), within that deadline;
// - carries the routing headers of the call being handled (propagation.ts).
import * as grpc from '@grpc/grpc-js';
import { propagateHeadersInterceptor } from './propagation';
import { currentCall } from './rpc';
import { xdsChannelCredentials } from './xds';

/** A generated client constructor (e.g. CatalogServiceClient). */
export type ClientConstructor<C extends grpc.Client> = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: Partial<grpc.ClientOptions>,
) => C;

/**
 * The xds:/// target of a mesh service, as istiod names its outbound listeners: NAME:PORT. With
 * `sidecarNamespace` (MESH_XDS off) the Kubernetes Service instead, whose traffic the Envoy sidecar
 * intercepts: dns:///NAME.NAMESPACE.svc.cluster.local:PORT.
 */
export function targetOf(service: string, servicePorts: Readonly<Record<string, number>>, sidecarNamespace?: string): string {
  const port = Object.hasOwn(servicePorts, service) ? servicePorts[service] : undefined;
  if (port === undefined) {
    const known = Object.keys(servicePorts);
    throw new Error(
      `no port for service ${JSON.stringify(service)} in MESH_SERVICE_PORTS (${known.length > 0 ? known.join(', ') : 'empty'}); ` +
        'add name=port for every service this instance calls',
    );
  }
  if (sidecarNamespace !== undefined) return `dns:///${service}.${sidecarNamespace}.svc.cluster.local:${port}`;
  return `xds:///${service}:${port}`;
}

/** Deadlines and wait_for_ready for every outbound call (see the top of this file). */
export function outboundCallInterceptor(callTimeoutMs: number): grpc.Interceptor {
  return (options, nextCall) => {
    const scope = currentCall();
    const own = options.deadline === undefined ? Infinity : new Date(options.deadline).getTime();
    const bounded = Math.min(own, scope?.deadlineMs ?? Infinity);
    const deadline = Number.isFinite(bounded) ? bounded : Date.now() + callTimeoutMs;
    const next: grpc.InterceptorOptions = { ...options, deadline };
    // grpc-js cancels this call when the parent is cancelled and caps it at the parent's deadline.
    if (scope) next.parent = scope.call;
    return new grpc.InterceptingCall(nextCall(next), {
      start(metadata, listener, nextStart) {
        metadata.setOptions({ ...metadata.getOptions(), waitForReady: true });
        nextStart(metadata, listener);
      },
    });
  };
}

/** Opens clients of mesh services; one channel per target, closed together at shutdown. */
export class Dialer {
  private readonly clients = new Map<string, grpc.Client>();

  constructor(
    private readonly servicePorts: Readonly<Record<string, number>>,
    private readonly callTimeoutSeconds: number,
    private readonly propagateHeaders: readonly string[],
    /** MESH_XDS off: plain gRPC to the Kubernetes Services of this namespace. */
    private readonly sidecarNamespace?: string,
  ) {}

  /** A client of `service` (its name in MESH_SERVICE_PORTS); throws when the name is not declared. */
  dial<C extends grpc.Client>(Client: ClientConstructor<C>, service: string): C {
    const target = targetOf(service, this.servicePorts, this.sidecarNamespace);
    const key = `${Client.name} ${target}`;
    let client = this.clients.get(key);
    if (!client) {
      const credentials = this.sidecarNamespace === undefined ? xdsChannelCredentials() : grpc.credentials.createInsecure();
      client = new Client(target, credentials, {
        interceptors: [outboundCallInterceptor(this.callTimeoutSeconds * 1000), propagateHeadersInterceptor(this.propagateHeaders)],
      });
      this.clients.set(key, client);
    }
    return client as C;
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
