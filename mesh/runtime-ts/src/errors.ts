// Canonical gRPC errors with google.rpc.Status details in `grpc-status-details-bin`
// (docs/runtime-contract.md, "Errors"), built with the generated google.rpc types in gen/ts.
import { Metadata, status as Code, type ServiceError as CallError, type StatusObject } from '@grpc/grpc-js';
import { Any } from '../../../gen/ts/google/protobuf/any';
import { BadRequest, BadRequest_FieldViolation, ErrorInfo } from '../../../gen/ts/google/rpc/error_details';
import { Status } from '../../../gen/ts/google/rpc/status';

export { BadRequest, ErrorInfo, Status };
/** What a caller of invalidArgument() gives per bad field (`field` is the proto field path). */
export type FieldViolation = Pick<BadRequest_FieldViolation, 'field' | 'description'>;

export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
export const INTERNAL_MESSAGE = 'internal error';

const TYPE_URL_PREFIX = 'type.googleapis.com/';
export const BAD_REQUEST_TYPE_URL = `${TYPE_URL_PREFIX}google.rpc.BadRequest`;
export const ERROR_INFO_TYPE_URL = `${TYPE_URL_PREFIX}google.rpc.ErrorInfo`;

/** A google.rpc error detail, tagged with its type so that it can be packed and unpacked. */
export type Detail = { kind: 'BadRequest'; value: BadRequest } | { kind: 'ErrorInfo'; value: ErrorInfo };

function pack(detail: Detail): Any {
  if (detail.kind === 'BadRequest') {
    return { typeUrl: BAD_REQUEST_TYPE_URL, value: Buffer.from(BadRequest.encode(detail.value).finish()) };
  }
  return { typeUrl: ERROR_INFO_TYPE_URL, value: Buffer.from(ErrorInfo.encode(detail.value).finish()) };
}

/** The details this runtime knows, unpacked; other types are skipped. */
export function unpackDetails(status: Status): Detail[] {
  const out: Detail[] = [];
  for (const any of status.details) {
    if (any.typeUrl === BAD_REQUEST_TYPE_URL) out.push({ kind: 'BadRequest', value: BadRequest.decode(any.value) });
    else if (any.typeUrl === ERROR_INFO_TYPE_URL) out.push({ kind: 'ErrorInfo', value: ErrorInfo.decode(any.value) });
  }
  return out;
}

/**
 * An error a handler means its caller to see: a code, a message and google.rpc details. The
 * runtime's error mapping (rpc.ts) sends it as it is; anything else thrown becomes INTERNAL.
 */
export class ServiceError extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly details: readonly Detail[] = [],
  ) {
    super(message);
    this.name = 'ServiceError';
  }

  toStatusProto(): Status {
    return { code: this.code, message: this.message, details: this.details.map(pack) };
  }

  /** What grpc-js sends: code, message, and the google.rpc.Status in the trailers when there are details. */
  toStatus(): Partial<StatusObject> {
    const metadata = new Metadata();
    if (this.details.length > 0) {
      metadata.set(STATUS_DETAILS_KEY, Buffer.from(Status.encode(this.toStatusProto()).finish()));
    }
    return { code: this.code, details: this.message, metadata };
  }
}

/** INVALID_ARGUMENT: `invalid request: field: description; ...` with a google.rpc.BadRequest. */
export function invalidArgument(violations: readonly FieldViolation[], messageText = 'invalid request'): ServiceError {
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join('; ');
  return new ServiceError(Code.INVALID_ARGUMENT, `${messageText}: ${summary}`, [
    { kind: 'BadRequest', value: BadRequest.fromPartial({ fieldViolations: violations.map((v) => ({ ...v })) }) },
  ]);
}

function withInfo(code: Code, messageText: string, reason: string, domain: string, metadata: Record<string, string>) {
  return new ServiceError(code, messageText, [{ kind: 'ErrorInfo', value: ErrorInfo.fromPartial({ reason, domain, metadata }) }]);
}

/** NOT_FOUND; the contract's one metadata key is `resource_ids` (comma-separated, in the order asked). */
export function notFound(messageText: string, reason: string, domain: string, metadata: Record<string, string> = {}): ServiceError {
  return withInfo(Code.NOT_FOUND, messageText, reason, domain, metadata);
}

export function failedPrecondition(
  messageText: string,
  reason: string,
  domain: string,
  metadata: Record<string, string> = {},
): ServiceError {
  return withInfo(Code.FAILED_PRECONDITION, messageText, reason, domain, metadata);
}

export function alreadyExists(messageText: string, reason: string, domain: string, metadata: Record<string, string> = {}): ServiceError {
  return withInfo(Code.ALREADY_EXISTS, messageText, reason, domain, metadata);
}

/** The metadata key of NOT_FOUND's ErrorInfo: the ids not found, comma-separated. */
export const RESOURCE_IDS_KEY = 'resource_ids';

/** A failed outbound call (grpc-js's ServiceError), as opposed to anything else thrown. */
export function isCallError(err: unknown): err is CallError {
  return err instanceof Error && typeof (err as CallError).code === 'number' && (err as CallError).metadata instanceof Metadata;
}

/** The google.rpc.Status in a failed call's trailers, if any. */
export function statusOf(err: CallError): Status | undefined {
  const raw = err.metadata?.get(STATUS_DETAILS_KEY)[0];
  if (raw === undefined) return undefined;
  return Status.decode(typeof raw === 'string' ? Buffer.from(raw, 'base64') : raw);
}

/** The google.rpc details a failed call carries (empty when it has none). */
export function detailsOf(err: CallError): Detail[] {
  const status = statusOf(err);
  return status ? unpackDetails(status) : [];
}

/** The same error again, for a caller of ours: same code, message and details. */
export function passThrough(err: CallError): ServiceError {
  const status = statusOf(err);
  return new ServiceError(err.code, err.details, status ? unpackDetails(status) : []);
}
