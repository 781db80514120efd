// @polymesh/runtime: the TypeScript implementation of docs/runtime-contract.md. Importing this
// loads @grpc/grpc-js; a service's main imports `@polymesh/runtime/run` only (see run.ts).
export { DEFAULTS, ConfigError, EnvReader, loadConfig, type MeshConfig, type LogLevel } from './config';
export { Logger, type Fields, type Severity } from './log';
export {
  alreadyExists,
  BadRequest,
  detailsOf,
  ErrorInfo,
  failedPrecondition,
  INTERNAL_MESSAGE,
  invalidArgument,
  isCallError,
  notFound,
  passThrough,
  RESOURCE_IDS_KEY,
  ServiceError,
  Status,
  statusOf,
  STATUS_DETAILS_KEY,
  unpackDetails,
  type Detail,
  type FieldViolation,
} from './errors';
export { currentCall, defineService, PASSED_THROUGH, toStatus, type Handlers, type ServiceRegistration } from './rpc';
export { Dialer, outboundCallInterceptor, targetOf, type ClientConstructor } from './dial';
export { propagatedHeaders, propagateHeadersInterceptor } from './propagation';
export { injectedFailuresInterceptor } from './injection';
export { SERVER_LISTENER_PREFIX, serverListenerName, xdsChannelCredentials } from './xds';
export { UNTRACED_GRPC_SERVICES } from './tracing';
export { PROTO_INCLUDE_DIRS, REPO_ROOT } from './paths';
export { runService, type ServiceEnv, type ServiceSetup, type ServiceSpec } from './run';
