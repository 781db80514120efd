// A real `consul agent -dev` for tests: $CONSUL_BIN, the repo's .tools/bin/consul or consul on
// PATH. Every port it opens is chosen free once (in a small HCL config in a temp dir), so it can be
// stopped by its pid and started again on the same ports; dev mode keeps no state across that.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from '../pricing/paths';
import { pollUntil, reserveFreePort } from '../runtime/net';

export function findConsul(): string | undefined {
  const candidates = [process.env.CONSUL_BIN, path.join(REPO_ROOT, '.tools', 'bin', 'consul')];
  for (const c of candidates) if (c && fs.existsSync(c)) return c;
  const which = spawnSync('sh', ['-c', 'command -v consul'], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() : undefined;
}

export const SKIP_WITHOUT_CONSUL = findConsul() ? false : 'no consul binary (set CONSUL_BIN or run make setup)';

function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', () => resolve(false));
    socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
  });
}

/** A port free for TCP and UDP on 127.0.0.1 (serf and DNS use both), not in `taken`. */
async function freePort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await reserveFreePort('127.0.0.1');
    if (!taken.has(port) && (await udpFree(port))) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no port free for both TCP and UDP');
}

export async function getJson(url: string): Promise<any> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

export class DevConsul {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pricing-consul-'));
  httpPort = 0;
  log = '';
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;

  constructor(readonly bin = findConsul()!) {}

  /** http://127.0.0.1:PORT */
  get api(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** Chooses the ports the first time, then starts the agent and waits for its leader. */
  async start(): Promise<void> {
    const config = path.join(this.dir, 'consul.hcl');
    if (!fs.existsSync(config)) {
      const taken = new Set<number>();
      const names = ['http', 'grpc', 'grpc_tls', 'dns', 'serf_lan', 'serf_wan', 'server'];
      const ports: string[] = [];
      for (const name of names) {
        const port = await freePort(taken);
        if (name === 'http') this.httpPort = port;
        ports.push(`  ${name} = ${port}`);
      }
      fs.writeFileSync(
        config,
        [
          'bind_addr = "127.0.0.1"',
          'client_addr = "127.0.0.1"',
          'advertise_addr = "127.0.0.1"',
          'disable_update_check = true',
          'ports {',
          ...ports,
          '}',
          '',
        ].join('\n'),
      );
    }
    const child = spawn(this.bin, ['agent', '-dev', '-config-file', config], { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let exitCode: number | null | undefined;
    this.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        exitCode = code;
        resolve();
      }),
    );
    const keep = (c: Buffer) => (this.log = (this.log + c.toString()).slice(-4000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    await pollUntil(
      async () => {
        if (exitCode !== undefined) throw new Error(`consul exited ${exitCode}`);
        try {
          return (await getJson(`${this.api}/v1/status/leader`)) !== '';
        } catch {
          return false;
        }
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    ).catch((err: Error) => {
      throw new Error(`consul did not start: ${err.message}\n${this.log}`);
    });
  }

  /** SIGTERM to the agent's pid, and wait until it has exited. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    process.kill(child.pid, 'SIGTERM');
    await this.exited;
    this.child = undefined;
  }

  /** Test teardown: SIGKILL if still running, remove the temp dir. */
  kill(): void {
    const child = this.child;
    if (child?.pid && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** The agent's view of service `id` and its check, or undefined when it does not know it. */
  async view(id: string): Promise<{ service: any; check: any } | undefined> {
    const res = await fetch(`${this.api}/v1/agent/service/${encodeURIComponent(id)}`, { signal: AbortSignal.timeout(2000) });
    if (res.status === 404) {
      await res.arrayBuffer();
      return undefined;
    }
    if (!res.ok) throw new Error(`GET service ${id}: HTTP ${res.status}`);
    const service = await res.json();
    const checks = await getJson(`${this.api}/v1/agent/checks`);
    const check = Object.values(checks).find((c: any) => c.ServiceID === id);
    return { service, check };
  }
}
