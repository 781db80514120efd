// JSON lines on stdout with the contract's keys; trace_id/span_id come from the active span.
// Uses only @opentelemetry/api, so it works before and without the SDK.
import { isSpanContextValid, trace, TraceFlags } from '@opentelemetry/api';
import type { LogLevel } from './config';

export type Severity = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SEVERITY_RANK: Record<Severity, number> = { DEBUG: 10, INFO: 20, WARN: 30, ERROR: 40 };

export type Fields = Record<string, unknown>;

export interface LoggerOptions {
  serviceName: string;
  instanceId: string;
  level: LogLevel;
  /** Where a finished line goes; stdout by default (tests pass their own). */
  write?: (line: string) => void;
}

function plain(value: unknown): unknown {
  if (value instanceof Error) {
    return { type: value.name, message: value.message, stack: value.stack };
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}

export class Logger {
  private readonly minRank: number;
  private readonly write: (line: string) => void;

  constructor(private readonly options: LoggerOptions) {
    this.minRank = RANK[options.level];
    this.write = options.write ?? ((line) => process.stdout.write(line + '\n'));
  }

  enabled(severity: Severity): boolean {
    return SEVERITY_RANK[severity] >= this.minRank;
  }

  log(severity: Severity, message: string, fields?: Fields): void {
    if (!this.enabled(severity)) return;
    const record: Record<string, unknown> = {
      timestamp: new Date().toISOString(),
      severity,
      message,
      'service.name': this.options.serviceName,
      'service.instance.id': this.options.instanceId,
    };
    const spanContext = trace.getActiveSpan()?.spanContext();
    // Only sampled spans: the untraced services (health, reflection, CSDS, the xDS client's own
    // streams) run under non-recording spans whose ids lead nowhere.
    if (spanContext && isSpanContextValid(spanContext) && (spanContext.traceFlags & TraceFlags.SAMPLED) !== 0) {
      record.trace_id = spanContext.traceId;
      record.span_id = spanContext.spanId;
    }
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        if (!(key in record)) record[key] = plain(value);
      }
    }
    this.write(JSON.stringify(record));
  }

  debug(message: string, fields?: Fields): void {
    this.log('DEBUG', message, fields);
  }
  info(message: string, fields?: Fields): void {
    this.log('INFO', message, fields);
  }
  warn(message: string, fields?: Fields): void {
    this.log('WARN', message, fields);
  }
  error(message: string, fields?: Fields): void {
    this.log('ERROR', message, fields);
  }
}
