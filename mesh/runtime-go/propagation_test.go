package mesh

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// headerReporter answers with the x-user-tier and x-canary values the server received.
type headerReporter struct {
	testpb.UnimplementedTestServiceServer
}

func received(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return strings.Join(md.Get("x-user-tier"), ",") + "|" + strings.Join(md.Get("x-canary"), ",")
}

func (headerReporter) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Username: received(ctx)}, nil
}

func (headerReporter) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	return s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(received(s.Context()))}})
}

// A call made with a handler's context carries the incoming call's listed headers (every value),
// not the others, and not over a value the call sets itself; outside any RPC it carries none.
func TestListedHeadersTravelFromTheIncomingCall(t *testing.T) {
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, headerReporter{})
	names := []string{"x-user-tier"}
	conn, err := grpc.NewClient(serveOn(t, srv), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(UnaryPropagateHeaders(names)),
		grpc.WithChainStreamInterceptor(StreamPropagateHeaders(names)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	seen := func(ctx context.Context) (unary, stream string) {
		t.Helper()
		return callBoth(t, ctx, client)
	}
	// What grpc-go hands a handler: the incoming call's metadata in its context.
	handling := metadata.NewIncomingContext(context.Background(),
		metadata.Pairs("x-user-tier", "beta", "x-user-tier", "gold", "x-canary", "yes"))
	cases := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"incoming", handling, "beta,gold|"},
		{"own value", metadata.AppendToOutgoingContext(handling, "x-user-tier", "free"), "free|"},
		{"outside any RPC", context.Background(), "|"},
	}
	for _, c := range cases {
		if u, s := seen(c.ctx); u != c.want || s != c.want {
			t.Errorf("%s: the server saw %q (unary), %q (stream); want %q", c.name, u, s, c.want)
		}
	}
	if got := PropagatedHeaders(handling, names); len(got) != 1 || strings.Join(got["x-user-tier"], ",") != "beta,gold" {
		t.Errorf("PropagatedHeaders = %v", got)
	}
}
