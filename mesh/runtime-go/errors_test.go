package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// failWith is a TestService whose unary and streaming handlers end with the same outcome: the
// error (or panic) a test sets. The stream sends one message first.
type failWith struct {
	testpb.UnimplementedTestServiceServer
	err   error
	panic any
}

func (f *failWith) outcome() error {
	if f.panic != nil {
		panic(f.panic)
	}
	return f.err
}

func (f *failWith) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, f.outcome()
}

func (f *failWith) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	if err := s.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	return f.outcome()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// A caller sees the same status, with the same details, from a unary and from a streaming RPC
// whatever the handler returned or however it panicked; unexpected errors become INTERNAL
// "internal error" with the detail only in the log.
func TestErrorMappingIsTheSameForUnaryAndStreamingRPCs(t *testing.T) {
	logs := &lockedBuffer{}
	log := NewLogger(logs, slog.LevelInfo, "svc", "svc-1")
	handler := &failWith{}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(UnaryErrorInterceptor(log)), grpc.ChainStreamInterceptor(StreamErrorInterceptor(log)))
	testpb.RegisterTestServiceServer(srv, handler)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := testpb.NewTestServiceClient(conn)
	ctx := context.Background()

	unary := func() error { _, err := client.EmptyCall(ctx, &testpb.Empty{}); return err }
	streaming := func() error {
		stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}

	downstream := status.Error(codes.Unavailable, "catalog: connection refused")
	cases := []struct {
		name        string
		err         error
		panic       any
		code        codes.Code
		message     string
		logged      string // in the log, never in the answer
		checkDetail func(t *testing.T, st *status.Status)
	}{
		{
			name: "bad request",
			err:  InvalidArgument(FieldViolation{"items[0].quantity", "must be at least 1"}, FieldViolation{"currency", "required"}),
			code: codes.InvalidArgument, message: "invalid request: items[0].quantity: must be at least 1; currency: required",
			checkDetail: func(t *testing.T, st *status.Status) {
				br := onlyDetail[*errdetails.BadRequest](t, st)
				if v := br.GetFieldViolations(); len(v) != 2 || v[0].GetField() != "items[0].quantity" || v[1].GetDescription() != "required" {
					t.Errorf("violations = %v", v)
				}
			},
		},
		{
			name: "not found",
			err:  NotFound(`products "a", "c" not found`, "UNKNOWN_PRODUCT", Domain("catalog"), "a", "c"),
			code: codes.NotFound, message: `products "a", "c" not found`,
			checkDetail: func(t *testing.T, st *status.Status) {
				info := onlyDetail[*errdetails.ErrorInfo](t, st)
				if info.GetDomain() != "catalog.shop.local" || info.GetMetadata()["resource_ids"] != "a,c" || len(info.GetMetadata()) != 1 {
					t.Errorf("ErrorInfo = %v", info)
				}
			},
		},
		{name: "downstream unavailable passes through", err: fmt.Errorf("asking catalog: %w", downstream), code: codes.Unavailable, message: "catalog: connection refused"},
		{name: "plain error", err: errors.New("disk on fire"), code: codes.Internal, message: InternalMessage, logged: "disk on fire"},
		{name: "panic", panic: "nil map write", code: codes.Internal, message: InternalMessage, logged: "nil map write"},
		{name: "context deadline", err: fmt.Errorf("query: %w", context.DeadlineExceeded), code: codes.DeadlineExceeded},
	}
	for _, c := range cases {
		for kind, call := range map[string]func() error{"unary": unary, "streaming": streaming} {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				handler.err, handler.panic = c.err, c.panic
				st := status.Convert(call())
				if st.Code() != c.code || (c.message != "" && st.Message() != c.message) {
					t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), c.code, c.message)
				}
				if c.checkDetail != nil {
					c.checkDetail(t, st)
				}
				if c.logged != "" && !strings.Contains(logs.String(), c.logged) {
					t.Fatalf("log lacks %q: %s", c.logged, logs.String())
				}
			})
		}
	}
}

func onlyDetail[T any](t *testing.T, st *status.Status) T {
	t.Helper()
	details := st.Details()
	if len(details) != 1 {
		t.Fatalf("details = %v, want one", details)
	}
	d, ok := details[0].(T)
	if !ok {
		t.Fatalf("detail is %T", details[0])
	}
	return d
}
