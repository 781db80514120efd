import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { type CallOptions, type ChannelCredentials, Client, type ClientOptions, type ClientReadableStream, type ClientUnaryCall, type handleServerStreamingCall, type handleUnaryCall, type Metadata, type ServiceError, type UntypedServiceImplementation } from "@grpc/grpc-js";
export declare const protobufPackage = "polymesh.conformance.v1";
export declare const protobufFileName = "polymesh/conformance/v1/conformance.proto";
/** Failure is how a probe is asked to fail; each maps to one rule of the contract's "Errors". */
export declare enum Failure {
    /** FAILURE_UNSPECIFIED - No failure: answer normally. */
    FAILURE_UNSPECIFIED = 0,
    /** FAILURE_INVALID_ARGUMENT - INVALID_ARGUMENT with a google.rpc.BadRequest violation of field `message`. */
    FAILURE_INVALID_ARGUMENT = 1,
    /** FAILURE_NOT_FOUND - NOT_FOUND with a google.rpc.ErrorInfo: reason MESSAGE_NOT_FOUND, metadata resource_ids = message. */
    FAILURE_NOT_FOUND = 2,
    /** FAILURE_UNEXPECTED - An unexpected error (an exception, a panic, a thrown Error): INTERNAL "internal error". */
    FAILURE_UNEXPECTED = 3,
    UNRECOGNIZED = -1
}
export declare function failureFromJSON(object: any): Failure;
export declare function failureToJSON(object: Failure): string;
/** EchoRequest says what to answer, or how to fail, or where to relay. */
export interface EchoRequest {
    /** Echoed back. */
    message: string;
    /** How to fail; FAILURE_UNSPECIFIED answers. */
    failure: Failure;
    /**
     * When set, the probe calls Echo on this mesh service (by its service name, through xDS) with
     * `message` and returns that answer in `relayed`.
     */
    relayTo: string;
}
/** EchoResponse says what the server saw. */
export interface EchoResponse {
    /** The request's message. */
    message: string;
    /** The answering instance's id (MESH_INSTANCE_ID). */
    instanceId: string;
    /** python, go or typescript. */
    language: string;
    /** Milliseconds left of the call's deadline when the server received it; 0 when it had none. */
    deadlineRemainingMs: number;
    /** The relayed call's answer, when `relay_to` was set. */
    relayed: EchoResponse | undefined;
    /** The trace id (lower-case hex) of the server span that handled the call. */
    traceId: string;
}
/** EchoStreamRequest asks for `count` responses, then an end or a failure. */
export interface EchoStreamRequest {
    /** Echoed in every response. */
    message: string;
    /** How many responses to send before ending (or failing). */
    count: number;
    /** How to fail after the responses; FAILURE_UNSPECIFIED ends the stream with OK. */
    failure: Failure;
}
/** EchoStreamResponse is one message of the stream. */
export interface EchoStreamResponse {
    /** The request's message. */
    message: string;
    /** 0, 1, ... in order. */
    index: number;
}
export declare const EchoRequest: MessageFns<EchoRequest>;
export declare const EchoResponse: MessageFns<EchoResponse>;
export declare const EchoStreamRequest: MessageFns<EchoStreamRequest>;
export declare const EchoStreamResponse: MessageFns<EchoStreamResponse>;
/**
 * ConformanceService is served by one small probe per runtime library (Python, Go, TypeScript),
 * so that tests/conformance can check every rule of docs/runtime-contract.md that a caller can
 * observe, in the same words for the three languages.
 */
export type ConformanceServiceService = typeof ConformanceServiceService;
export declare const ConformanceServiceService: {
    /** Echo answers with what the server saw, fails as asked, or relays to another mesh service. */
    readonly echo: {
        readonly path: "/polymesh.conformance.v1.ConformanceService/Echo";
        readonly requestStream: false;
        readonly responseStream: false;
        readonly requestSerialize: (value: EchoRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => EchoRequest;
        readonly responseSerialize: (value: EchoResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => EchoResponse;
    };
    /** EchoStream sends `count` responses, then ends or fails as asked. */
    readonly echoStream: {
        readonly path: "/polymesh.conformance.v1.ConformanceService/EchoStream";
        readonly requestStream: false;
        readonly responseStream: true;
        readonly requestSerialize: (value: EchoStreamRequest) => Buffer;
        readonly requestDeserialize: (value: Buffer) => EchoStreamRequest;
        readonly responseSerialize: (value: EchoStreamResponse) => Buffer;
        readonly responseDeserialize: (value: Buffer) => EchoStreamResponse;
    };
};
export interface ConformanceServiceServer extends UntypedServiceImplementation {
    /** Echo answers with what the server saw, fails as asked, or relays to another mesh service. */
    echo: handleUnaryCall<EchoRequest, EchoResponse>;
    /** EchoStream sends `count` responses, then ends or fails as asked. */
    echoStream: handleServerStreamingCall<EchoStreamRequest, EchoStreamResponse>;
}
export interface ConformanceServiceClient extends Client {
    /** Echo answers with what the server saw, fails as asked, or relays to another mesh service. */
    echo(request: EchoRequest, callback: (error: ServiceError | null, response: EchoResponse) => void): ClientUnaryCall;
    echo(request: EchoRequest, metadata: Metadata, callback: (error: ServiceError | null, response: EchoResponse) => void): ClientUnaryCall;
    echo(request: EchoRequest, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: EchoResponse) => void): ClientUnaryCall;
    /** EchoStream sends `count` responses, then ends or fails as asked. */
    echoStream(request: EchoStreamRequest, options?: Partial<CallOptions>): ClientReadableStream<EchoStreamResponse>;
    echoStream(request: EchoStreamRequest, metadata?: Metadata, options?: Partial<CallOptions>): ClientReadableStream<EchoStreamResponse>;
}
export declare const ConformanceServiceClient: {
    new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): ConformanceServiceClient;
    service: typeof ConformanceServiceService;
    serviceName: string;
};
type Builtin = Date | Function | Uint8Array | string | number | boolean | undefined;
export type DeepPartial<T> = T extends Builtin ? T : T extends globalThis.Array<infer U> ? globalThis.Array<DeepPartial<U>> : T extends ReadonlyArray<infer U> ? ReadonlyArray<DeepPartial<U>> : T extends {} ? {
    [K in keyof T]?: DeepPartial<T[K]>;
} : Partial<T>;
type KeysOfUnion<T> = T extends T ? keyof T : never;
export type Exact<P, I extends P> = P extends Builtin ? P : P & {
    [K in keyof P]: Exact<P[K], I[K]>;
} & {
    [K in Exclude<keyof I, KeysOfUnion<P>>]: never;
};
export interface MessageFns<T> {
    encode(message: T, writer?: BinaryWriter): BinaryWriter;
    decode(input: BinaryReader | Uint8Array, length?: number): T;
    fromJSON(object: any): T;
    toJSON(message: T): unknown;
    create<I extends Exact<DeepPartial<T>, I>>(base?: I): T;
    fromPartial<I extends Exact<DeepPartial<T>, I>>(object: I): T;
}
export {};
