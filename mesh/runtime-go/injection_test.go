package mesh

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// countingServer counts the calls its handlers ran.
type countingServer struct {
	testpb.UnimplementedTestServiceServer
	handled atomic.Int32
}

func (s *countingServer) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.handled.Add(1)
	return &testpb.SimpleResponse{}, nil
}

func (s *countingServer) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	s.handled.Add(1)
	return stream.Send(&testpb.StreamingOutputCallResponse{})
}

func injectingClient(t *testing.T, percent int, delay time.Duration) (testpb.TestServiceClient, *countingServer) {
	t.Helper()
	counting := &countingServer{}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(UnaryInjectedFailures(percent, delay)),
		grpc.ChainStreamInterceptor(StreamInjectedFailures(percent, delay)))
	testpb.RegisterTestServiceServer(srv, counting)
	conn, err := grpc.NewClient(serveOn(t, srv), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn), counting
}

func streamErr(client testpb.TestServiceClient, ctx context.Context) error {
	stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func TestInjectedFailuresAnswerUnavailableAndRunNoHandler(t *testing.T) {
	client, counting := injectingClient(t, 100, 0)
	ctx := context.Background()
	for range 5 {
		_, unary := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		for _, err := range []error{unary, streamErr(client, ctx)} {
			if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "injected failure (MESH_INJECT_FAILURE_PERCENT=100)" {
				t.Fatalf("got %v; want UNAVAILABLE injected failure", err)
			}
		}
	}
	if n := counting.handled.Load(); n != 0 {
		t.Fatalf("%d handlers ran", n)
	}
}

func TestAnInjectedDelayComesBeforeTheHandlerWithinTheDeadline(t *testing.T) {
	client, counting := injectingClient(t, 0, 300*time.Millisecond)
	started := time.Now()
	if _, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(started); took < 300*time.Millisecond || took > 600*time.Millisecond {
		t.Fatalf("the call took %v; want about 300 ms", took)
	}
	late := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	_, unary := client.UnaryCall(late(), &testpb.SimpleRequest{})
	for _, err := range []error{unary, streamErr(client, late())} {
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v; want DEADLINE_EXCEEDED", err)
		}
	}
	// This call's delay ends after the late calls' would have: had their handlers run, they ran first.
	if _, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if n := counting.handled.Load(); n != 2 {
		t.Fatalf("%d handlers ran; want 2 (the calls without a deadline)", n)
	}
}

func TestInjectedFailuresAreOffByDefaultAndSaidOnceWhenOn(t *testing.T) {
	var out bytes.Buffer
	log := NewLogger(&out, slog.LevelInfo, "s", "s-1")
	if opts := injectedFailures(Config{}, log); opts != nil || out.Len() != 0 {
		t.Fatalf("default: %d options, log %q", len(opts), out.String())
	}
	opts := injectedFailures(Config{InjectFailurePercent: 50, InjectDelay: 300 * time.Millisecond}, log)
	want := `"severity":"WARN","message":"injecting failures: MESH_INJECT_FAILURE_PERCENT=50, MESH_INJECT_DELAY_MS=300"`
	if len(opts) != 2 || strings.Count(out.String(), "\n") != 1 || !strings.Contains(out.String(), want) {
		t.Fatalf("%d options, log %q", len(opts), out.String())
	}
}
