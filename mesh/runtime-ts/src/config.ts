// Configuration from environment variables, parsed once into a frozen object (docs/runtime-contract.md).
// This module must not import @grpc/grpc-js: it runs before tracing is set up.
import * as fs from 'node:fs';
import * as net from 'node:net';

/** Our own variables and their defaults; OTEL_*, CONSUL_HTTP_ADDR and GRPC_XDS_BOOTSTRAP are the standard names. */
export const DEFAULTS = Object.freeze({
  MESH_SERVICE_VERSION: 'v1',
  MESH_NAMESPACE: 'default',
  MESH_HOST: '127.0.0.1',
  MESH_PORT: 0,
  MESH_ADMIN_PORT: 0,
  MESH_SERVICE_PORTS: '',
  MESH_CALL_TIMEOUT: 5,
  MESH_PROPAGATE_HEADERS: 'x-user-tier',
  MESH_DATA_DIR: 'data',
  MESH_DRAIN_TIMEOUT: 5,
  MESH_LOG_LEVEL: 'info',
  MESH_REGISTER: true,
  MESH_XDS: true,
  MESH_INJECT_FAILURE_PERCENT: 0,
  MESH_INJECT_DELAY_MS: 0,
  CONSUL_HTTP_ADDR: '127.0.0.1:8500',
  OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4317',
  OTEL_TRACES_EXPORTER: 'otlp',
});

/** MESH_INJECT_DELAY_MS is at most an hour: it is for demos and tests. */
export const MAX_INJECT_DELAY_MS = 3_600_000;

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface MeshConfig {
  readonly serviceName: string;
  readonly serviceVersion: string;
  readonly instanceId: string;
  /** The Istio/Kubernetes namespace: xDS node id, FQDNs, SPIFFE identities. */
  readonly namespace: string;
  readonly host: string;
  /** Business port; 0 means "pick a free one at start". */
  readonly port: number;
  readonly adminPort: number;
  /** MESH_SERVICE_PORTS: the service port of every mesh service this instance calls, by name. */
  readonly servicePorts: Readonly<Record<string, number>>;
  /** Seconds an outbound call may take when the incoming call has no deadline. */
  readonly callTimeoutSeconds: number;
  /** MESH_PROPAGATE_HEADERS: request headers copied from an incoming call to its outbound calls. */
  readonly propagateHeaders: readonly string[];
  readonly dataDir: string;
  readonly drainTimeoutSeconds: number;
  readonly logLevel: LogLevel;
  readonly register: boolean;
  /** MESH_INJECT_FAILURE_PERCENT and MESH_INJECT_DELAY_MS: injected failures (injection.ts); 0: none. */
  readonly injectFailurePercent: number;
  readonly injectDelayMs: number;
  /** Consul's HTTP API as a base URL, e.g. http://127.0.0.1:8500 */
  readonly consulHttpAddr: string;
  /** Consul's ACL token ('' for none), from CONSUL_HTTP_TOKEN or the file CONSUL_HTTP_TOKEN_FILE names. A secret: never logged. */
  readonly consulToken: string;
  /** MESH_XDS: false under an Envoy sidecar (a plain business server, DNS targets). */
  readonly xds: boolean;
  /** '' when xds is false and GRPC_XDS_BOOTSTRAP is unset. */
  readonly xdsBootstrap: string;
  readonly otlpEndpoint: string;
  readonly tracesExporter: 'otlp' | 'none';
}

/** Thrown when any variable is bad; its message is the one line the contract asks for. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Reads variables and collects every problem instead of stopping at the first, so one run names
 * every bad variable. A variable that is unset or empty takes its default.
 */
export class EnvReader {
  private readonly problems: string[] = [];

  constructor(private readonly env: NodeJS.ProcessEnv) {}

  private raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  fail(name: string, reason: string): void {
    this.problems.push(`${name}: ${reason}`);
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  required(name: string): string {
    const value = this.raw(name);
    if (value === undefined) {
      this.fail(name, 'required');
      return '';
    }
    return value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!/^[+-]?\d+$/.test(value)) {
      this.fail(name, `not an integer: ${JSON.stringify(value)}`);
      return fallback;
    }
    const n = Number(value);
    if (n < min || n > max) {
      this.fail(name, `must be between ${min} and ${max}: ${value}`);
      return fallback;
    }
    return n;
  }

  positiveNumber(name: string, fallback: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isFinite(n)) {
      this.fail(name, `not a number: ${JSON.stringify(value)}`);
      return fallback;
    }
    if (n <= 0) {
      this.fail(name, 'must be > 0');
      return fallback;
    }
    return n;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(lower)) return true;
    if (['false', '0', 'no', 'off'].includes(lower)) return false;
    this.fail(name, `not a boolean (true/false): ${JSON.stringify(value)}`);
    return fallback;
  }

  oneOf<T extends string>(name: string, fallback: T, choices: readonly T[]): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase() as T;
    if (!choices.includes(lower)) {
      this.fail(name, `must be one of ${choices.join(', ')}: ${JSON.stringify(value)}`);
      return fallback;
    }
    return lower;
  }

  /** Throws one ConfigError naming every problem seen so far. */
  finish(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
  }
}

function readHost(r: EnvReader): string {
  const host = r.string('MESH_HOST', DEFAULTS.MESH_HOST);
  // The xDS server's listener name carries the literal address, so a name would never match.
  if (net.isIP(host) === 0) r.fail('MESH_HOST', `not an IP address: ${JSON.stringify(host)}`);
  return host;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function readNamespace(r: EnvReader): string {
  const namespace = r.string('MESH_NAMESPACE', DEFAULTS.MESH_NAMESPACE);
  // It becomes part of DNS names (NAME.NAMESPACE.svc.cluster.local) and of the xDS node id.
  if (!DNS_LABEL.test(namespace) || namespace.length > 63) {
    r.fail('MESH_NAMESPACE', `not a DNS label (lower-case letters, digits, dashes): ${JSON.stringify(namespace)}`);
  }
  return namespace;
}

/** `name=port,...`; every bad entry is named, e.g. `MESH_SERVICE_PORTS: "catalog=x": not a port`. */
export function readServicePorts(r: EnvReader): Record<string, number> {
  const ports = new Map<string, number>();
  const raw = r.string('MESH_SERVICE_PORTS', DEFAULTS.MESH_SERVICE_PORTS);
  for (const entry of raw.split(',').map((e) => e.trim()).filter((e) => e !== '')) {
    const [name, port, ...rest] = entry.split('=').map((part) => part.trim());
    if (port === undefined || rest.length > 0 || !DNS_LABEL.test(name)) {
      r.fail('MESH_SERVICE_PORTS', `${JSON.stringify(entry)}: not name=port`);
    } else if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      r.fail('MESH_SERVICE_PORTS', `${JSON.stringify(entry)}: not a port`);
    } else if (ports.has(name)) {
      r.fail('MESH_SERVICE_PORTS', `${JSON.stringify(entry)}: ${name} given twice`);
    } else {
      ports.set(name, Number(port));
    }
  }
  return Object.fromEntries(ports);
}

const HEADER_NAME = /^[a-z0-9][a-z0-9_.-]*$/; // a lower-case gRPC metadata key

/** Comma-separated header names; gRPC's own (`grpc-*`) and binary (`*-bin`) headers are refused. */
export function readPropagateHeaders(r: EnvReader): string[] {
  const names: string[] = [];
  const raw = r.string('MESH_PROPAGATE_HEADERS', DEFAULTS.MESH_PROPAGATE_HEADERS);
  for (const entry of raw.split(',').map((e) => e.trim()).filter((e) => e !== '')) {
    if (!HEADER_NAME.test(entry)) {
      r.fail('MESH_PROPAGATE_HEADERS', `${JSON.stringify(entry)}: not a lower-case header name`);
    } else if (entry.startsWith('grpc-') || entry.endsWith('-bin')) {
      r.fail('MESH_PROPAGATE_HEADERS', `${JSON.stringify(entry)}: grpc-* and *-bin headers are not propagated`);
    } else if (names.includes(entry)) {
      r.fail('MESH_PROPAGATE_HEADERS', `${JSON.stringify(entry)}: given twice`);
    } else {
      names.push(entry);
    }
  }
  return names;
}

function readConsulAddr(r: EnvReader): string {
  const value = r.string('CONSUL_HTTP_ADDR', DEFAULTS.CONSUL_HTTP_ADDR);
  const withScheme = /^[a-z]+:\/\//i.test(value) ? value : `http://${value}`;
  try {
    const url = new URL(withScheme);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
    if (!url.hostname) throw new Error('host');
    return `${url.protocol}//${url.host}`;
  } catch {
    r.fail('CONSUL_HTTP_ADDR', `not host:port or an http(s) URL: ${JSON.stringify(value)}`);
    return `http://${DEFAULTS.CONSUL_HTTP_ADDR}`;
  }
}

const CONSUL_TOKEN = /^[\x21-\x7e]+$/; // it travels in the X-Consul-Token header

/**
 * Consul's ACL token as Consul's own CLI takes it: CONSUL_HTTP_TOKEN, or the contents of the file
 * CONSUL_HTTP_TOKEN_FILE names (read once, here); '' for none. A problem never shows the secret.
 */
export function readConsulToken(r: EnvReader): string {
  const name = 'CONSUL_HTTP_TOKEN';
  const fileName = 'CONSUL_HTTP_TOKEN_FILE';
  let value = r.string(name, '');
  const path = r.string(fileName, '');
  let source = name;
  if (value !== '' && path !== '') {
    r.fail(fileName, `${name} is set too; give one`);
    return '';
  }
  if (path !== '') {
    source = fileName;
    try {
      value = fs.readFileSync(path, 'utf8').trim();
    } catch {
      r.fail(fileName, `cannot read ${JSON.stringify(path)}`);
      return '';
    }
    if (value === '') {
      r.fail(fileName, `${JSON.stringify(path)} is empty`);
      return '';
    }
  }
  if (value !== '' && !CONSUL_TOKEN.test(value)) {
    r.fail(source, 'not a token (printable ASCII, no spaces)');
    return '';
  }
  return value;
}

function readOtlpEndpoint(r: EnvReader): string {
  const value = r.string('OTEL_EXPORTER_OTLP_ENDPOINT', DEFAULTS.OTEL_EXPORTER_OTLP_ENDPOINT);
  try {
    const url = new URL(value);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
    return value;
  } catch {
    r.fail('OTEL_EXPORTER_OTLP_ENDPOINT', `not an http(s) URL: ${JSON.stringify(value)}`);
    return DEFAULTS.OTEL_EXPORTER_OTLP_ENDPOINT;
  }
}

function readBootstrap(r: EnvReader, xds: boolean): string {
  if (!xds) return r.string('GRPC_XDS_BOOTSTRAP', '');
  const file = r.required('GRPC_XDS_BOOTSTRAP');
  if (file !== '') {
    try {
      fs.accessSync(file, fs.constants.R_OK);
    } catch {
      r.fail('GRPC_XDS_BOOTSTRAP', `not a readable file: ${JSON.stringify(file)}`);
    }
  }
  return file;
}

/** Reads the contract's variables; problems are collected in `r`. */
export function readMeshConfig(r: EnvReader, defaultServiceName: string, pid = process.pid): MeshConfig {
  const serviceName = r.string('OTEL_SERVICE_NAME', defaultServiceName);
  if (!/^[a-z][a-z0-9-]*$/.test(serviceName)) {
    r.fail('OTEL_SERVICE_NAME', `must be lower-case letters, digits and dashes: ${JSON.stringify(serviceName)}`);
  }
  const xds = r.boolean('MESH_XDS', DEFAULTS.MESH_XDS);
  return {
    serviceName,
    serviceVersion: r.string('MESH_SERVICE_VERSION', DEFAULTS.MESH_SERVICE_VERSION),
    instanceId: r.string('MESH_INSTANCE_ID', `${serviceName}-${pid}`),
    namespace: readNamespace(r),
    host: readHost(r),
    port: r.integer('MESH_PORT', DEFAULTS.MESH_PORT, 0, 65535),
    adminPort: r.integer('MESH_ADMIN_PORT', DEFAULTS.MESH_ADMIN_PORT, 0, 65535),
    servicePorts: readServicePorts(r),
    callTimeoutSeconds: r.positiveNumber('MESH_CALL_TIMEOUT', DEFAULTS.MESH_CALL_TIMEOUT),
    propagateHeaders: readPropagateHeaders(r),
    dataDir: r.string('MESH_DATA_DIR', DEFAULTS.MESH_DATA_DIR),
    drainTimeoutSeconds: r.positiveNumber('MESH_DRAIN_TIMEOUT', DEFAULTS.MESH_DRAIN_TIMEOUT),
    logLevel: r.oneOf('MESH_LOG_LEVEL', DEFAULTS.MESH_LOG_LEVEL as LogLevel, LOG_LEVELS),
    register: r.boolean('MESH_REGISTER', DEFAULTS.MESH_REGISTER),
    injectFailurePercent: r.integer('MESH_INJECT_FAILURE_PERCENT', DEFAULTS.MESH_INJECT_FAILURE_PERCENT, 0, 100),
    injectDelayMs: r.integer('MESH_INJECT_DELAY_MS', DEFAULTS.MESH_INJECT_DELAY_MS, 0, MAX_INJECT_DELAY_MS),
    consulHttpAddr: readConsulAddr(r),
    consulToken: readConsulToken(r),
    xds,
    xdsBootstrap: readBootstrap(r, xds),
    otlpEndpoint: readOtlpEndpoint(r),
    tracesExporter: r.oneOf('OTEL_TRACES_EXPORTER', 'otlp', ['otlp', 'none'] as const),
  };
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * Parses the contract's variables plus a service's own (read by `readService` from the same reader,
 * so one error line names every bad variable of both). Throws ConfigError.
 */
export function loadConfig<S>(
  env: NodeJS.ProcessEnv,
  defaultServiceName: string,
  readService: (r: EnvReader) => S,
): Readonly<{ mesh: MeshConfig; service: S }> {
  const r = new EnvReader(env);
  const mesh = readMeshConfig(r, defaultServiceName);
  const service = readService(r);
  r.finish();
  return deepFreeze({ mesh, service });
}
