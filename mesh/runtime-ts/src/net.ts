// Small socket helpers shared by the servers and the tests.
import * as net from 'node:net';
import type { Server, ServerCredentials } from '@grpc/grpc-js';

export function hostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

export function bindAsync(server: Server, address: string, creds: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port)));
  });
}

/**
 * A port that is free right now on `host`. The xDS server cannot bind port 0 (its listener resource
 * is named after the literal address), so MESH_PORT=0 is resolved here; a race with another
 * process taking the port in between is possible and fails the start loudly.
 */
export function reserveFreePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.once('error', reject);
    probe.listen({ host, port: 0, exclusive: true }, () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

export function canConnect(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Polls until `check` is true; rejects when `signal` aborts or `timeoutMs` passes. */
export async function pollUntil(
  check: () => Promise<boolean> | boolean,
  opts: { intervalMs?: number; timeoutMs?: number; signal?: AbortSignal; onWait?: (elapsedMs: number) => void } = {},
): Promise<void> {
  const interval = opts.intervalMs ?? 100;
  const started = Date.now();
  for (;;) {
    opts.signal?.throwIfAborted();
    if (await check()) return;
    const elapsed = Date.now() - started;
    if (opts.timeoutMs !== undefined && elapsed > opts.timeoutMs) {
      throw new Error(`condition not met after ${opts.timeoutMs} ms`);
    }
    opts.onWait?.(elapsed);
    await new Promise<void>((resolve) => setTimeout(resolve, interval));
  }
}
