// Load process: node load.mjs <port> <rate> <duration s> <warmup s> <out.json>
// Open loop: call i is sent at start + i/rate whatever has come back; its latency is measured from
// its actual send to its callback. Sends rate*(warmup+duration) calls, waits for the last reply
// (each call has a 5 s deadline), writes the measured latencies (ms) and exits. The sender's worst
// lag (how late a measured call left, by this process's own event loop) is reported too.
import { writeFileSync } from 'node:fs';
import { CATALOG_GEN, requirePricing } from './common.mjs';

const [port, rate, duration, warmup, out] = process.argv.slice(2).map((v, i) => (i === 0 || i === 4 ? v : Number(v)));
const grpc = requirePricing('@grpc/grpc-js');
const catalog = requirePricing(CATALOG_GEN);
const CALL_TIMEOUT_MS = 5000;
const client = new catalog.CatalogServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
await new Promise((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));

const total = Math.round(rate * (warmup + duration));
const measuredFrom = Math.round(rate * warmup);
const latencies = new Float64Array(total).fill(NaN);
const interval = 1000 / rate;
let errors = 0;
let pending = total;
let worstLag = 0;
let next = 0;
let finish;
const finished = new Promise((resolve) => (finish = resolve));
const start = performance.now() + 100;
const request = { id: 'sku-espresso-cup' };

function send(index) {
  const sent = performance.now();
  if (index >= measuredFrom) worstLag = Math.max(worstLag, sent - (start + index * interval));
  client.getProduct(request, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err) => {
    if (err) errors += 1;
    else latencies[index] = performance.now() - sent;
    if (--pending === 0) finish();
  });
}

function tick() {
  const now = performance.now();
  while (next < total && start + next * interval <= now) send(next++);
  if (next < total) setTimeout(tick, Math.max(0, start + next * interval - performance.now()));
}
setTimeout(tick, 100);
const timeout = setTimeout(finish, (warmup + duration) * 1000 + CALL_TIMEOUT_MS + 5000);
await finished;
clearTimeout(timeout);
client.close();
const measured = Array.from(latencies.subarray(measuredFrom)).filter((x) => !Number.isNaN(x));
writeFileSync(out, JSON.stringify({ latencies: measured, errors, sender_worst_lag_ms: worstLag }));
process.exit(0);
