// Canonical gRPC errors with google.rpc.Status details in `grpc-status-details-bin`.
//
// google.rpc.Status, BadRequest and ErrorInfo are encoded by hand with @bufbuild/protobuf's wire
// BinaryWriter/BinaryReader: three tiny, frozen messages (field numbers from
// googleapis/google/rpc/{status,error_details}.proto) are less than generating and vendoring the
// googleapis protos for one language, and the generated code in gen/ts stays our contracts only.
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { Metadata, status as Code, type ServerErrorResponse, type ServiceError } from '@grpc/grpc-js';

export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
export const BAD_REQUEST_TYPE_URL = 'type.googleapis.com/google.rpc.BadRequest';
export const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';

export interface Any {
  typeUrl: string;
  value: Uint8Array;
}
export interface RpcStatus {
  code: number;
  message: string;
  details: Any[];
}
export interface FieldViolation {
  field: string;
  description: string;
}
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

// --- encoding ---------------------------------------------------------------------------------

export function encodeBadRequest(violations: readonly FieldViolation[]): Uint8Array {
  const w = new BinaryWriter();
  for (const v of violations) {
    w.uint32((1 << 3) | WireType.LengthDelimited).fork(); // field_violations = 1
    w.uint32((1 << 3) | WireType.LengthDelimited).string(v.field);
    w.uint32((2 << 3) | WireType.LengthDelimited).string(v.description);
    w.join();
  }
  return w.finish();
}

export function encodeErrorInfo(info: ErrorInfo): Uint8Array {
  const w = new BinaryWriter();
  w.uint32((1 << 3) | WireType.LengthDelimited).string(info.reason);
  w.uint32((2 << 3) | WireType.LengthDelimited).string(info.domain);
  for (const [key, value] of Object.entries(info.metadata)) {
    w.uint32((3 << 3) | WireType.LengthDelimited).fork(); // map<string,string> metadata = 3
    w.uint32((1 << 3) | WireType.LengthDelimited).string(key);
    w.uint32((2 << 3) | WireType.LengthDelimited).string(value);
    w.join();
  }
  return w.finish();
}

export function encodeStatus(s: RpcStatus): Uint8Array {
  const w = new BinaryWriter();
  if (s.code !== 0) w.uint32((1 << 3) | WireType.Varint).int32(s.code);
  if (s.message !== '') w.uint32((2 << 3) | WireType.LengthDelimited).string(s.message);
  for (const d of s.details) {
    w.uint32((3 << 3) | WireType.LengthDelimited).fork(); // repeated google.protobuf.Any details = 3
    w.uint32((1 << 3) | WireType.LengthDelimited).string(d.typeUrl);
    w.uint32((2 << 3) | WireType.LengthDelimited).bytes(d.value);
    w.join();
  }
  return w.finish();
}

// --- decoding (tests and callers that inspect details) ----------------------------------------

function readFields(bytes: Uint8Array, onField: (field: number, r: BinaryReader, wire: WireType) => boolean): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (!onField(field, r, wire)) r.skip(wire);
  }
}

export function decodeStatus(bytes: Uint8Array): RpcStatus {
  const s: RpcStatus = { code: 0, message: '', details: [] };
  readFields(bytes, (field, r) => {
    if (field === 1) s.code = r.int32();
    else if (field === 2) s.message = r.string();
    else if (field === 3) {
      const any: Any = { typeUrl: '', value: new Uint8Array() };
      readFields(r.bytes(), (f, ar) => {
        if (f === 1) any.typeUrl = ar.string();
        else if (f === 2) any.value = ar.bytes();
        else return false;
        return true;
      });
      s.details.push(any);
    } else return false;
    return true;
  });
  return s;
}

export function decodeBadRequest(bytes: Uint8Array): FieldViolation[] {
  const out: FieldViolation[] = [];
  readFields(bytes, (field, r) => {
    if (field !== 1) return false;
    const v: FieldViolation = { field: '', description: '' };
    readFields(r.bytes(), (f, vr) => {
      if (f === 1) v.field = vr.string();
      else if (f === 2) v.description = vr.string();
      else return false;
      return true;
    });
    out.push(v);
    return true;
  });
  return out;
}

export function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const info: ErrorInfo = { reason: '', domain: '', metadata: {} };
  readFields(bytes, (field, r) => {
    if (field === 1) info.reason = r.string();
    else if (field === 2) info.domain = r.string();
    else if (field === 3) {
      let key = '';
      let value = '';
      readFields(r.bytes(), (f, er) => {
        if (f === 1) key = er.string();
        else if (f === 2) value = er.string();
        else return false;
        return true;
      });
      info.metadata[key] = value;
    } else return false;
    return true;
  });
  return info;
}

/** The google.rpc.Status carried by an error's trailers, if any. */
export function statusFromMetadata(metadata: Metadata | undefined): RpcStatus | undefined {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (raw === undefined) return undefined;
  return decodeStatus(typeof raw === 'string' ? Buffer.from(raw, 'base64') : raw);
}

// --- errors handlers throw ---------------------------------------------------------------------

/** An error a handler means to return to its caller as it is. */
export class RpcError extends Error implements ServerErrorResponse {
  constructor(
    readonly code: Code,
    readonly details: string,
    readonly metadata: Metadata = new Metadata(),
  ) {
    super(details);
    this.name = 'RpcError';
  }

  /** An error with a google.rpc.Status (same code and message) carrying `details`. */
  static withDetails(code: Code, message: string, details: Any[]): RpcError {
    const metadata = new Metadata();
    metadata.set(STATUS_DETAILS_KEY, Buffer.from(encodeStatus({ code, message, details })));
    return new RpcError(code, message, metadata);
  }
}

export function invalidArgument(message: string, violations: readonly FieldViolation[]): RpcError {
  return RpcError.withDetails(Code.INVALID_ARGUMENT, message, [
    { typeUrl: BAD_REQUEST_TYPE_URL, value: encodeBadRequest(violations) },
  ]);
}

/** NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS... with a google.rpc.ErrorInfo. */
export function withErrorInfo(code: Code, message: string, info: ErrorInfo): RpcError {
  return RpcError.withDetails(code, message, [{ typeUrl: ERROR_INFO_TYPE_URL, value: encodeErrorInfo(info) }]);
}

/** Re-raises a downstream error unchanged: same code, message and status details. */
export function passThrough(err: ServiceError): RpcError {
  const metadata = new Metadata();
  for (const raw of err.metadata?.get(STATUS_DETAILS_KEY) ?? []) metadata.add(STATUS_DETAILS_KEY, raw);
  return new RpcError(err.code, err.details, metadata);
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as ServiceError).code === 'number' && 'metadata' in err;
}

export const INTERNAL_MESSAGE = 'internal error';
