"""One base for the client interceptors that only rewrite a call's details (its metadata, its
timeout) before it goes out, for all four call shapes alike."""

from __future__ import annotations

import grpc

__all__ = ["CallDetailsInterceptor"]


class CallDetailsInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                             grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Subclasses say how in `_details`; every call shape goes through it."""

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        raise NotImplementedError

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)
