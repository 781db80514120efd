"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.LANGUAGE = void 0;
exports.failAsAsked = failAsAsked;
exports.conformanceService = conformanceService;
exports.setup = setup;
// What the probe answers; each failure maps to one rule of the contract's "Errors".
const api_1 = require("@opentelemetry/api");
const runtime_1 = require("@polymesh/runtime");
const conformance_1 = require("../../../../../gen/ts/polymesh/conformance/v1/conformance");
exports.LANGUAGE = 'typescript';
/** Throws as `failure` asks; returns when it asks for nothing. */
function failAsAsked(failure, message, serviceName) {
    switch (failure) {
        case conformance_1.Failure.FAILURE_INVALID_ARGUMENT:
            throw (0, runtime_1.invalidArgument)([{ field: 'message', description: 'rejected as asked' }]);
        case conformance_1.Failure.FAILURE_NOT_FOUND:
            throw (0, runtime_1.notFound)(`message ${JSON.stringify(message)} not found`, 'MESSAGE_NOT_FOUND', `${serviceName}.shop.local`, {
                resource_ids: message,
            });
        case conformance_1.Failure.FAILURE_UNEXPECTED:
            throw new Error(`unexpected failure, as asked (message ${JSON.stringify(message)})`);
        default:
            return;
    }
}
function call(start) {
    return new Promise((resolve, reject) => start((err, res) => (err ? reject(err) : resolve(res))));
}
function conformanceService(env) {
    const { serviceName, instanceId } = env.config;
    return (0, runtime_1.defineService)(conformance_1.ConformanceServiceService, {
        async echo(request) {
            const deadlineMs = (0, runtime_1.currentCall)()?.deadlineMs ?? Infinity;
            const remaining = Number.isFinite(deadlineMs) ? Math.max(0, Math.round(deadlineMs - Date.now())) : 0;
            failAsAsked(request.failure, request.message, serviceName);
            const response = {
                message: request.message,
                instanceId,
                language: exports.LANGUAGE,
                deadlineRemainingMs: remaining,
                relayed: undefined,
                traceId: api_1.trace.getActiveSpan()?.spanContext().traceId ?? '',
            };
            if (request.relayTo !== '') {
                // Through the runtime's dial: xds:///NAME:PORT, under this call's deadline.
                const peer = env.dialer.dial(conformance_1.ConformanceServiceClient, request.relayTo);
                const relayed = { message: request.message, failure: conformance_1.Failure.FAILURE_UNSPECIFIED, relayTo: '' };
                response.relayed = await call((done) => peer.echo(relayed, done));
            }
            return response;
        },
        async *echoStream(request) {
            for (let index = 0; index < request.count; index++)
                yield { message: request.message, index };
            failAsAsked(request.failure, request.message, serviceName);
        },
    });
}
async function setup(env) {
    return { services: [conformanceService(env)], protoFiles: ['polymesh/conformance/v1/conformance.proto'] };
}
//# sourceMappingURL=probe.js.map