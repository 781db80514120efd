import assert from 'node:assert/strict';
import { test } from 'node:test';
import { trace } from '@opentelemetry/api';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { Logger } from './log';

function capture(level: 'debug' | 'info' | 'warn' | 'error' = 'info') {
  const lines: Record<string, unknown>[] = [];
  const logger = new Logger({
    serviceName: 'pricing',
    instanceId: 'pricing-1',
    level,
    write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>),
  });
  return { logger, lines };
}

test('a line has the contract keys and no trace ids outside a span', () => {
  const { logger, lines } = capture();
  logger.info('hello', { extra: 1, severity: 'overridden?' });
  assert.equal(lines.length, 1);
  const [line] = lines;
  assert.deepEqual(Object.keys(line).slice(0, 5), ['timestamp', 'severity', 'message', 'service.name', 'service.instance.id']);
  assert.match(String(line.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(line.severity, 'INFO');
  assert.equal(line.message, 'hello');
  assert.equal(line['service.name'], 'pricing');
  assert.equal(line['service.instance.id'], 'pricing-1');
  assert.equal(line.extra, 1);
  assert.ok(!('trace_id' in line) && !('span_id' in line));
});

test('inside an active span the line carries its trace_id and span_id', async () => {
  const provider = new NodeTracerProvider();
  provider.register();
  const { logger, lines } = capture();
  const tracer = trace.getTracer('test');
  let expected = { traceId: '', spanId: '' };
  await tracer.startActiveSpan('work', async (span) => {
    expected = span.spanContext();
    await Promise.resolve(); // across an await, as in a handler
    logger.warn('inside');
    span.end();
  });
  logger.info('after');
  assert.equal(lines[0].trace_id, expected.traceId);
  assert.equal(lines[0].span_id, expected.spanId);
  assert.match(String(lines[0].trace_id), /^[0-9a-f]{32}$/);
  assert.match(String(lines[0].span_id), /^[0-9a-f]{16}$/);
  assert.ok(!('trace_id' in lines[1]));
  await provider.shutdown();
});

test('levels below MESH_LOG_LEVEL are dropped; errors are serialized', () => {
  const { logger, lines } = capture('warn');
  logger.debug('d');
  logger.info('i');
  logger.warn('w');
  logger.error('e', { error: new Error('boom') });
  assert.deepEqual(lines.map((l) => l.severity), ['WARN', 'ERROR']);
  assert.equal((lines[1].error as { message: string }).message, 'boom');
});
