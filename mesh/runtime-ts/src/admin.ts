// The plain admin server: grpc.health.v1.Health (official grpc-health-check, Watch works),
// server reflection (official @grpc/reflection) and gRPC's admin services: CSDS (grpc-js-xds's
// envoy.service.status.v3.ClientStatusDiscoveryService: this instance's xDS client config) and
// channelz (grpc-js's own grpc.channelz.v1.Channelz). It is
// not xDS-managed, so it answers before the control plane has sent the business listener, and
// Consul's gRPC check can reach it.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import { bindAsync, hostPort } from './net';
import { registerXds } from './xds';

export interface ReflectionSources {
  /** .proto files (relative to includeDirs) that declare the business services. */
  protoFiles: string[];
  includeDirs: string[];
}

export interface AdminServer {
  readonly server: grpc.Server;
  readonly port: number;
  /** Sets one status for "" and for every business service name. */
  setServing(status: ServingStatus): void;
}

/**
 * The .proto sources of the admin services, shipped inside the packages that serve them, so that
 * reflection lists (and describes) them like the business services.
 */
function adminProtos(): { files: string[]; includeDirs: string[] } {
  const xdsDeps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  const grpcProtos = path.join(path.dirname(require.resolve('@grpc/grpc-js/package.json')), 'proto');
  return {
    files: ['envoy/service/status/v3/csds.proto', 'channelz.proto'],
    includeDirs: [
      grpcProtos,
      ...['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis'].map((dep) => path.join(xdsDeps, dep)),
    ],
  };
}

/**
 * Reflection needs descriptors: they are loaded from the .proto sources with @grpc/proto-loader
 * (the same files buf compiles), plus grpc-health-check's health.proto and the admin services'
 * protos, so `grpcurl describe` works for everything the admin port lists.
 */
export function loadReflectionPackage(sources: ReflectionSources): protoLoader.PackageDefinition {
  const admin = adminProtos();
  return protoLoader.loadSync([...sources.protoFiles, healthProtoPath, ...admin.files], {
    includeDirs: [...sources.includeDirs, ...admin.includeDirs],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
}

export async function startAdminServer(opts: {
  host: string;
  port: number;
  serviceNames: string[];
  reflection: ReflectionSources;
}): Promise<AdminServer> {
  const names = ['', ...opts.serviceNames];
  const health = new HealthImplementation(Object.fromEntries(names.map((n) => [n, 'NOT_SERVING' as ServingStatus])));
  const server = new grpc.Server();
  health.addToServer(server);
  new ReflectionService(loadReflectionPackage(opts.reflection)).addToServer(server);
  // grpc-js registers channelz as an admin service, grpc-js-xds adds CSDS when it is registered.
  registerXds();
  grpc.addAdminServicesToServer(server);
  const port = await bindAsync(server, hostPort(opts.host, opts.port), grpc.ServerCredentials.createInsecure());
  let current: ServingStatus | undefined;
  return {
    server,
    port,
    setServing(status) {
      if (status === current) return;
      current = status;
      for (const n of names) health.setStatus(n, status);
    },
  };
}
