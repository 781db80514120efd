// Proxyless xDS: the business server is an XdsServer (its listener comes from the control plane)
// and service-to-service channels use xds:///NAME. register() is needed in clients AND servers: it
// installs the xds: resolver and the HTTP filters (router, fault, RBAC) the server's listener uses.
import * as grpc from '@grpc/grpc-js';
import * as xds from '@grpc/grpc-js-xds';
import { bindAsync, hostPort } from './net';

let registered = false;
export function registerXds(): void {
  if (!registered) {
    xds.register();
    registered = true;
  }
}

/** Channel credentials for xds:/// targets: TLS when the control plane says so, else insecure. */
export function xdsChannelCredentials(): grpc.ChannelCredentials {
  registerXds();
  return new xds.XdsChannelCredentials(grpc.credentials.createInsecure());
}

export interface BusinessServer {
  readonly server: grpc.Server;
  readonly host: string;
  readonly port: number;
}

export interface ServiceRegistration {
  /** Full name, e.g. shop.pricing.v1.PricingService (health uses it). */
  readonly name: string;
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
}

/**
 * Starts an xDS-managed server on host:port (port must be non-zero). It accepts connections only
 * once the control plane has sent the listener `grpc/server?xds.resource.listening_address=host:port`;
 * the bind callback fires only then, so callers wait for the port with canConnect() instead.
 * `onBindError` reports a bind that failed later (e.g. the port was taken).
 */
export function startXdsServer(opts: {
  host: string;
  port: number;
  services: readonly ServiceRegistration[];
  onBindError: (err: Error) => void;
  onServingState?: (state: { code: grpc.status; details: string }) => void;
}): BusinessServer {
  registerXds();
  const server = new xds.XdsServer();
  for (const s of opts.services) server.addService(s.definition, s.implementation);
  const address = hostPort(opts.host, opts.port);
  const creds = new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure());
  bindAsync(server, address, creds).catch(opts.onBindError);
  // The port entry exists only after bindAsync, so the listener is added after it.
  if (opts.onServingState) server.addServingStateListener(address, opts.onServingState);
  return { server, host: opts.host, port: opts.port };
}
