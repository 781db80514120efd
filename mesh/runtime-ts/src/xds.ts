// Proxyless xDS: the business server is an XdsServer (its listener comes from the control plane)
// and service-to-service channels use xds:///NAME:PORT. register() is needed in clients AND
// servers: it installs the xds: resolver, the HTTP filters (router, fault, RBAC) the server's
// listener uses, and CSDS for the admin server.
import './xds-env'; // before grpc-js-xds is loaded
import * as grpc from '@grpc/grpc-js';
import * as xds from '@grpc/grpc-js-xds';
import { bindAsync, hostPort } from './net';
import type { ServiceRegistration } from './rpc';
import type { Logger } from './log';

/**
 * The name of a server's listener resource is this prefix + HOST:PORT, as Istio's proxyless agent
 * writes it into `server_listener_resource_name_template` (mesh/xds/bootstrap.py writes ours).
 */
export const SERVER_LISTENER_PREFIX = 'xds.istio.io/grpc/lds/inbound/';

export function serverListenerName(host: string, port: number): string {
  return SERVER_LISTENER_PREFIX + hostPort(host, port);
}

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

/**
 * Starts an xDS-managed server on host:port (port must be non-zero: the listener resource is
 * named after the literal address). It accepts connections only while the control plane's
 * listener is in place; `onServing` reports every change of that (true: serving). `onBindError`
 * reports a bind that failed (e.g. the port was taken).
 */
export function startXdsServer(opts: {
  host: string;
  port: number;
  services: readonly ServiceRegistration[];
  interceptors: grpc.ServerInterceptor[];
  logger: Logger;
  onBindError: (err: Error) => void;
  onServing: (serving: boolean, details: string) => void;
}): BusinessServer {
  registerXds();
  const server = new xds.XdsServer({ interceptors: opts.interceptors });
  for (const s of opts.services) server.addService(s.definition, s.implement(opts.logger));
  const address = hostPort(opts.host, opts.port);
  const creds = new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure());
  // The bind callback fires only once a listener has arrived; serving state is followed below.
  bindAsync(server, address, creds).catch(opts.onBindError);
  // The port entry exists only after bindAsync, so the listener is added after it. Our patch of
  // grpc-js-xds (patches/) makes it report a removed listener too, not only errors and arrivals.
  server.addServingStateListener(address, (state) => opts.onServing(state.code === grpc.status.OK, state.details));
  return { server, host: opts.host, port: opts.port };
}

/**
 * MESH_XDS off (an Envoy sidecar does TLS, routing and policy): a plain server on host:port, with
 * startXdsServer's callbacks; it serves as soon as it is bound.
 */
export function startPlainServer(opts: Parameters<typeof startXdsServer>[0]): BusinessServer {
  const server = new grpc.Server({ interceptors: opts.interceptors });
  for (const s of opts.services) server.addService(s.definition, s.implement(opts.logger));
  bindAsync(server, hostPort(opts.host, opts.port), grpc.ServerCredentials.createInsecure())
    .then(() => opts.onServing(true, 'plain server (MESH_XDS off)'))
    .catch(opts.onBindError);
  return { server, host: opts.host, port: opts.port };
}
