// Does span export stall the Node event loop? Latency of a traced grpc-js server at a fixed rate.
//
//   make build-ts
//   node benchmarks/node_span_export/run.mjs                      # 1000 rps, 5 x 5 s per config
//   node benchmarks/node_span_export/run.mjs --rate 500 --duration 3 --repeats 2 --configs none,sdk
//
// Starts a real Jaeger (.tools/bin/jaeger, mesh/runner/jaeger.yaml, free loopback ports), then for
// each repetition and configuration (the order rotates) a server process (server.mjs) and a load
// process (load.mjs) sending a fixed open-loop rate for a bounded time. Stops the server with
// SIGTERM (its tracer provider's shutdown flushes) and Jaeger by PID at the end. Configurations:
//   none      no tracing at all (the baseline)
//   noexport  setupTracing() with OTEL_TRACES_EXPORTER=none: spans created, no processor
//   sdk       the SDK's BatchSpanProcessor + OTLPTraceExporter (gRPC) on the event loop (what
//             setupTracing() wires with OTEL_TRACES_EXPORTER=otlp)
// Prints p50/p90/p99/p99.9/max (median over repetitions, ms) with ratios to `none`; writes every
// run to benchmarks/results/node_span_export.json.
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, TRACING, requirePricing } from './common.mjs';

const HERE = path.join(ROOT, 'benchmarks', 'node_span_export');
const JAEGER = path.join(ROOT, '.tools', 'bin', 'jaeger');
const JAEGER_CONFIG = path.join(ROOT, 'mesh', 'runner', 'jaeger.yaml');
const CONFIGS = ['none', 'noexport', 'sdk'];
const PERCENTILES = [['p50', 50], ['p90', 90], ['p99', 99], ['p99.9', 99.9]];
const KEYS = [...PERCENTILES.map(([k]) => k), 'max'];

const { values: opts } = parseArgs({
  options: {
    rate: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    repeats: { type: 'string', default: '5' },
    configs: { type: 'string', default: CONFIGS.join(',') },
    out: { type: 'string', default: path.join(ROOT, 'benchmarks', 'results', 'node_span_export.json') },
  },
});
const rate = Number(opts.rate);
const duration = Number(opts.duration);
const warmup = Number(opts.warmup);
const repeats = Number(opts.repeats);
const configs = opts.configs.split(',');
for (const c of configs) if (!CONFIGS.includes(c)) throw new Error(`unknown config ${c}`);
requirePricing.resolve(TRACING); // fails early without a build

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePorts(count) {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise((resolve) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => resolve(s)); })),
  );
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

async function pollUntil(condition, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(child.exitCode)
    : new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** SIGTERM to this child's PID, SIGKILL to the same PID after `ms`. */
async function stop(child, ms = 15000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  await exited(child);
  clearTimeout(timer);
}

async function startJaeger(workdir) {
  const [otlp, otlpHttp, query, queryGrpc, health] = await freePorts(5);
  const log = openSync(path.join(workdir, 'jaeger.log'), 'w');
  const proc = spawn(JAEGER, ['--config', JAEGER_CONFIG], {
    env: {
      ...process.env,
      JAEGER_OTLP_GRPC_PORT: String(otlp), JAEGER_OTLP_HTTP_PORT: String(otlpHttp),
      JAEGER_QUERY_PORT: String(query), JAEGER_QUERY_GRPC_PORT: String(queryGrpc), JAEGER_HEALTH_PORT: String(health),
    },
    stdio: ['ignore', log, log],
  });
  const jaeger = { proc, endpoint: `http://127.0.0.1:${otlp}`, query: `http://127.0.0.1:${query}` };
  try {
    await pollUntil(async () => (await fetch(`http://127.0.0.1:${health}/status`)).status === 200, 30000, 'Jaeger health');
  } catch (err) {
    await stop(proc);
    throw err;
  }
  return jaeger;
}

async function services(jaeger) {
  const reply = await fetch(`${jaeger.query}/api/v3/services`);
  return (await reply.json()).services ?? [];
}

function readLine(stream) {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const onData = (chunk) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl >= 0) { stream.off('data', onData); resolve(buffer.slice(0, nl)); }
    };
    stream.setEncoding('utf8');
    stream.on('data', onData);
    stream.once('end', () => reject(new Error(`stream ended before a line: ${JSON.stringify(buffer)}`)));
  });
}

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1))];
}

async function runOnce(config, jaeger, runId, workdir) {
  const serviceName = `bench-node-${config}-${runId}`;
  const server = spawn(process.execPath, [path.join(HERE, 'server.mjs'), config, jaeger.endpoint, serviceName, String(warmup)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let rest = '';
  try {
    const line = await readLine(server.stdout);
    if (!line.startsWith('PORT ')) throw new Error(`server (${config}) did not start: ${line}`);
    server.stdout.on('data', (chunk) => (rest += chunk));
    const out = path.join(workdir, `${serviceName}.json`);
    const loader = spawn(process.execPath, [path.join(HERE, 'load.mjs'), line.split(' ')[1], String(rate), String(duration), String(warmup), out], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const timer = setTimeout(() => stop(loader), (warmup + duration) * 1000 + 30000);
    const code = await exited(loader);
    clearTimeout(timer);
    if (code !== 0) throw new Error(`load process exited with ${code}`);
    var result = JSON.parse(readFileSync(out, 'utf8'));
  } finally {
    await stop(server, 60000);
  }
  const lines = rest.trim().split('\n');
  const serverStats = JSON.parse(lines[lines.length - 1] || '{}');
  if (config === 'sdk') {
    await pollUntil(async () => (await services(jaeger)).includes(serviceName), 15000, `${serviceName}'s spans in Jaeger`);
  }
  const sorted = result.latencies.sort((a, b) => a - b);
  const summary = Object.fromEntries(PERCENTILES.map(([k, q]) => [k, percentile(sorted, q)]));
  summary.max = sorted[sorted.length - 1];
  Object.assign(summary, { calls: sorted.length, errors: result.errors, sender_worst_lag_ms: result.sender_worst_lag_ms }, serverStats);
  return summary;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function summarize(runs) {
  const table = {};
  for (const c of configs) {
    table[c] = Object.fromEntries(KEYS.map((k) => [k, median(runs[c].map((r) => r[k]))]));
    table[c].event_loop_delay_p99_ms = median(runs[c].map((r) => r.event_loop_delay_p99_ms));
    table[c].event_loop_delay_max_ms = median(runs[c].map((r) => r.event_loop_delay_max_ms));
  }
  for (const c of configs) {
    if (table.none) table[c].ratio = Object.fromEntries(KEYS.map((k) => [k, table[c][k] / table.none[k]]));
    table[c].dropped_spans = runs[c].reduce((n, r) => n + (r.dropped_spans ?? 0), 0);
    table[c].errors = runs[c].reduce((n, r) => n + r.errors, 0);
  }
  return table;
}

function format(table) {
  const lines = [
    `\n${rate} rps, ${duration} s measured, median of ${repeats} runs (ms; x = ratio to none; eld = server event-loop delay max)`,
    `| config | ${KEYS.join(' | ')} | eld max |`,
    `|---|${KEYS.map(() => '---').join('|')}|---|`,
  ];
  for (const [c, row] of Object.entries(table)) {
    const cells = KEYS.map((k) => `${row[k].toFixed(2)}${row.ratio ? ` (${row.ratio[k].toFixed(1)}x)` : ''}`);
    lines.push(`| ${c} | ${cells.join(' | ')} | ${row.event_loop_delay_max_ms.toFixed(1)} |`);
  }
  return lines.join('\n');
}

const workdir = mkdtempSync(path.join(os.tmpdir(), 'node-span-export-bench-'));
const runs = Object.fromEntries(configs.map((c) => [c, []]));
const jaeger = await startJaeger(workdir);
let failed = false;
try {
  for (let repeat = 0; repeat < repeats; repeat++) {
    const shift = repeat % configs.length;
    for (const config of [...configs.slice(shift), ...configs.slice(0, shift)]) {
      const s = await runOnce(config, jaeger, `r${repeat}`, workdir);
      runs[config].push(s);
      console.log(`  run ${repeat + 1}/${repeats} ${config.padStart(8)}: p50=${s.p50.toFixed(2)} p99=${s.p99.toFixed(2)} max=${s.max.toFixed(2)} ms`
        + ` errors=${s.errors} lag=${s.sender_worst_lag_ms.toFixed(1)} eldmax=${(s.event_loop_delay_max_ms ?? 0).toFixed(1)}`
        + (s.dropped_spans !== undefined ? ` dropped=${s.dropped_spans}` : ''));
    }
  }
} catch (err) {
  failed = true;
  console.error(err);
} finally {
  await stop(jaeger.proc);
  if (failed) console.error(`Jaeger log kept in ${workdir}`);
  else rmSync(workdir, { recursive: true, force: true });
}
if (failed) process.exit(1);
const table = summarize(runs);
console.log(format(table));
const pkg = (name) => requirePricing(`${name}/package.json`).version;
const output = {
  command: ['node benchmarks/node_span_export/run.mjs', ...process.argv.slice(2)].join(' '),
  when: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  machine: { cpus: os.cpus().length, node: process.version, platform: `${os.platform()} ${os.release()} ${os.arch()}` },
  versions: Object.fromEntries(['@grpc/grpc-js', '@opentelemetry/sdk-trace-base', '@opentelemetry/exporter-trace-otlp-grpc'].map((n) => [n, pkg(n)])),
  settings: { rate, duration_s: duration, warmup_s: warmup, repeats, configs },
  summary_ms: table,
  runs,
};
mkdirSync(path.dirname(opts.out), { recursive: true });
writeFileSync(opts.out, JSON.stringify(output, null, 2) + '\n');
console.log(`wrote ${path.relative(ROOT, opts.out)}`);
