package mesh

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// deadlineReporter answers with the milliseconds left of the call's deadline as the server saw
// it ("none" without one), on a unary and a streaming RPC.
type deadlineReporter struct {
	testpb.UnimplementedTestServiceServer
}

func remaining(ctx context.Context) string {
	d, ok := ctx.Deadline()
	if !ok {
		return "none"
	}
	return strconv.FormatInt(time.Until(d).Milliseconds(), 10)
}

func (deadlineReporter) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Username: remaining(ctx)}, nil
}

func (deadlineReporter) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	return s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(remaining(s.Context()))}})
}

// A call without a deadline gets the call timeout; a call with one keeps it, so a handler's
// outbound call is bounded by the incoming deadline, not by the default.
func TestCallTimeoutAppliesOnlyWithoutADeadline(t *testing.T) {
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, deadlineReporter{})
	addr := serveOn(t, srv)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(UnaryCallTimeout(3*time.Second)),
		grpc.WithChainStreamInterceptor(StreamCallTimeout(3*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	seen := func(ctx context.Context) (unary, stream int64) {
		t.Helper()
		u, st := callBoth(t, ctx, client)
		unary, _ = strconv.ParseInt(u, 10, 64)
		stream, _ = strconv.ParseInt(st, 10, 64)
		return unary, stream
	}
	if u, s := seen(context.Background()); u < 2500 || u > 3000 || s < 2500 || s > 3000 {
		t.Fatalf("without a deadline the server saw %d ms (unary), %d ms (stream) left; want about 3000", u, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	if u, s := seen(ctx); u < 300 || u > 800 || s < 300 || s > 800 {
		t.Fatalf("with an 800 ms deadline the server saw %d ms (unary), %d ms (stream) left", u, s)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if u, _ := seen(ctx); u < 50_000 {
		t.Fatalf("a deadline longer than the call timeout was cut to %d ms", u)
	}
}

// callBoth makes one unary and one server-streaming call and returns what the test server wrote
// back in each (the unary reply's username, the first stream message's body).
func callBoth(t *testing.T, ctx context.Context, client testpb.TestServiceClient) (unary, stream string) {
	t.Helper()
	r, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return r.GetUsername(), string(m.GetPayload().GetBody())
}

func serveOn(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
