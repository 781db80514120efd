package mesh

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Routing headers travel with the call (docs/runtime-contract.md, "Calls between services"): an
// outbound call made with a handler's context carries the values of every header
// MESH_PROPAGATE_HEADERS lists that the incoming call came with (grpc-go keeps its metadata in the
// context), unless the call sets that header itself: its own value wins. A call made outside any
// RPC has no incoming metadata and gets none.

// PropagatedHeaders is the headers of names the incoming call of ctx came with, each with its
// values in order; empty outside any RPC.
func PropagatedHeaders(ctx context.Context, names []string) metadata.MD {
	incoming, _ := metadata.FromIncomingContext(ctx)
	found := metadata.MD{}
	for key, values := range incoming {
		if slices.Contains(names, key) {
			found[key] = values
		}
	}
	return found
}

// UnaryPropagateHeaders gives a call the incoming call's headers of names it does not set itself.
func UnaryPropagateHeaders(names []string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(withPropagatedHeaders(ctx, names), method, req, reply, cc, opts...)
	}
}

// StreamPropagateHeaders is UnaryPropagateHeaders for streams.
func StreamPropagateHeaders(names []string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(withPropagatedHeaders(ctx, names), desc, cc, method, opts...)
	}
}

func withPropagatedHeaders(ctx context.Context, names []string) context.Context {
	own, _ := metadata.FromOutgoingContext(ctx)
	var pairs []string
	for key, values := range PropagatedHeaders(ctx, names) {
		if len(own.Get(key)) > 0 {
			continue
		}
		for _, value := range values {
			pairs = append(pairs, key, value)
		}
	}
	if len(pairs) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, pairs...)
}
