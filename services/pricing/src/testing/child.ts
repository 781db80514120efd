// Runs the built service as a child process and follows its JSON log lines.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../pricing/paths';
import { pollUntil } from '../runtime/net';

// The stable entry point scripts/write-entry.js writes (what npm start and the runner use).
export const MAIN_JS = path.join(PACKAGE_ROOT, 'dist', 'main.js');

export class ServiceProcess {
  readonly child: ChildProcess;
  readonly lines: Record<string, unknown>[] = [];
  stderr = '';
  exitCode: number | null | undefined;
  readonly exited: Promise<number | null>;

  constructor(env: Record<string, string>) {
    this.child = spawn(process.execPath, [MAIN_JS], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buffered = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      for (const part of parts) if (part.trim()) this.lines.push(JSON.parse(part) as Record<string, unknown>);
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString('utf8')));
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code) => {
        this.exitCode = code;
        resolve(code);
      }),
    );
  }

  async waitForLog(message: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    let found: Record<string, unknown> | undefined;
    await pollUntil(
      () => {
        found = this.lines.find((l) => l.message === message);
        if (!found && this.exitCode !== undefined) {
          throw new Error(`exited ${this.exitCode} before logging ${message}: ${this.stderr}`);
        }
        return found !== undefined;
      },
      { intervalMs: 50, timeoutMs },
    );
    return found!;
  }

  /** Stops the child by its pid (SIGKILL) if it is still running. */
  kill(): void {
    if (this.exitCode === undefined && this.child.pid) process.kill(this.child.pid, 'SIGKILL');
  }
}
