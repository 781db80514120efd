package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InternalMessage is the only text a caller sees of an unexpected error.
const InternalMessage = "internal error"

// UnaryErrorInterceptor lets gRPC status errors through and turns anything else (plain errors and
// panics) into INTERNAL "internal error", logging the detail with the trace id of the RPC.
func UnaryErrorInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", fmt.Sprint(r))
				resp, err = nil, status.Error(codes.Internal, InternalMessage)
			}
		}()
		resp, err = handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		return resp, ToStatusError(ctx, log, info.FullMethod, err)
	}
}

// ToStatusError is the one mapping of a handler's error to what the caller sees.
func ToStatusError(ctx context.Context, log *slog.Logger, method string, err error) error {
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	log.ErrorContext(ctx, "internal error", "method", method, "error", err.Error())
	return status.Error(codes.Internal, InternalMessage)
}
