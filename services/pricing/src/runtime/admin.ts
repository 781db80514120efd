// The plain admin server: grpc.health.v1.Health (official grpc-health-check, Watch works) and
// server reflection (official @grpc/reflection). It is not xDS-managed, so it answers even before
// the control plane has sent the business listener, and Consul's gRPC check can reach it.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import { bindAsync, hostPort } from './net';

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
 * Reflection needs descriptors: they are loaded from the .proto sources with @grpc/proto-loader
 * (the same files buf compiles), plus grpc-health-check's health.proto, so `grpcurl describe`
 * works for the business services and for Health.
 */
export function loadReflectionPackage(sources: ReflectionSources): protoLoader.PackageDefinition {
  return protoLoader.loadSync([...sources.protoFiles, healthProtoPath], {
    includeDirs: sources.includeDirs,
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
  const port = await bindAsync(server, hostPort(opts.host, opts.port), grpc.ServerCredentials.createInsecure());
  return {
    server,
    port,
    setServing(status) {
      for (const n of names) health.setStatus(n, status);
    },
  };
}
