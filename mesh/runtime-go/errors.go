package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// InternalMessage is the only text a caller sees of an unexpected error.
const InternalMessage = "internal error"

// ResourceIDsKey is the one ErrorInfo metadata key of a NOT_FOUND: the ids not found,
// comma-separated, in the order asked.
const ResourceIDsKey = "resource_ids"

// Domain is the ErrorInfo domain of a service's errors.
func Domain(service string) string { return service + ".shop.local" }

// FieldViolation is one bad field of a request: its proto field path (e.g. items[0].quantity)
// and what is wrong with it.
type FieldViolation struct {
	Field       string
	Description string
}

// InvalidArgument is INVALID_ARGUMENT with a google.rpc.BadRequest listing every violation; the
// message is "invalid request: " and each "field: description", joined by "; ".
func InvalidArgument(violations ...FieldViolation) error {
	request := &errdetails.BadRequest{}
	summary := make([]string, 0, len(violations))
	for _, v := range violations {
		request.FieldViolations = append(request.FieldViolations,
			&errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		summary = append(summary, v.Field+": "+v.Description)
	}
	return withDetails(codes.InvalidArgument, "invalid request: "+strings.Join(summary, "; "), request)
}

// NotFound is NOT_FOUND with a google.rpc.ErrorInfo whose metadata names the ids not found.
func NotFound(message, reason, domain string, resourceIDs ...string) error {
	return withDetails(codes.NotFound, message, &errdetails.ErrorInfo{
		Reason: reason, Domain: domain, Metadata: map[string]string{ResourceIDsKey: strings.Join(resourceIDs, ",")},
	})
}

// FailedPrecondition is FAILED_PRECONDITION with a google.rpc.ErrorInfo.
func FailedPrecondition(message, reason, domain string, metadata map[string]string) error {
	return withDetails(codes.FailedPrecondition, message, &errdetails.ErrorInfo{Reason: reason, Domain: domain, Metadata: metadata})
}

// AlreadyExists is ALREADY_EXISTS with a google.rpc.ErrorInfo.
func AlreadyExists(message, reason, domain string, metadata map[string]string) error {
	return withDetails(codes.AlreadyExists, message, &errdetails.ErrorInfo{Reason: reason, Domain: domain, Metadata: metadata})
}

// Unavailable is UNAVAILABLE with a google.rpc.ErrorInfo, for a dependency the caller may retry.
func Unavailable(message, reason, domain string) error {
	return withDetails(codes.Unavailable, message, &errdetails.ErrorInfo{Reason: reason, Domain: domain})
}

func withDetails(code codes.Code, message string, detail protoadapt.MessageV1) error {
	st, err := status.New(code, message).WithDetails(detail)
	if err != nil { // only when the detail cannot be marshalled: a bug here, not the caller's
		return fmt.Errorf("status details: %w", err)
	}
	return st.Err()
}

// UnaryErrorInterceptor is ErrorMapping for unary RPCs.
func UnaryErrorInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				resp, err = nil, panicked(ctx, log, info.FullMethod, r)
			}
		}()
		resp, err = handler(ctx, req)
		if err != nil {
			return nil, ToStatusError(ctx, log, info.FullMethod, err)
		}
		return resp, nil
	}
}

// StreamErrorInterceptor is the same mapping for streaming RPCs: what a stream handler returns,
// or a panic in it, reaches the caller exactly as from a unary handler.
func StreamErrorInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		ctx := ss.Context()
		defer func() {
			if r := recover(); r != nil {
				err = panicked(ctx, log, info.FullMethod, r)
			}
		}()
		if err = handler(srv, ss); err != nil {
			return ToStatusError(ctx, log, info.FullMethod, err)
		}
		return nil
	}
}

func panicked(ctx context.Context, log *slog.Logger, method string, r any) error {
	log.ErrorContext(ctx, "panic in handler", "method", method, "panic", fmt.Sprint(r))
	return status.Error(codes.Internal, InternalMessage)
}

// ToStatusError is the one mapping of a handler's error to what the caller sees: a gRPC status
// (the handler's own, or one a downstream call returned and the handler passed on, wrapped or
// not) goes through unchanged, code, message and details, so that callers may retry UNAVAILABLE
// and DEADLINE_EXCEEDED; a context error is its status; anything else is INTERNAL
// "internal error", with the detail only in the log.
func ToStatusError(ctx context.Context, log *slog.Logger, method string, err error) error {
	var carrier interface{ GRPCStatus() *status.Status }
	if errors.As(err, &carrier) {
		if st := carrier.GRPCStatus(); st.Code() != codes.Unknown && st.Code() != codes.OK {
			return st.Err()
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	log.ErrorContext(ctx, "internal error", "method", method, "error", err.Error())
	return status.Error(codes.Internal, InternalMessage)
}
