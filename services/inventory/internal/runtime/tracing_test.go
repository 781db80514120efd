package runtime

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type failingTestService struct {
	testpb.UnimplementedTestServiceServer
}

func (failingTestService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return nil, errors.New("database is locked")
}

// Business RPCs are traced on client and server with one trace id (W3C propagation), health
// checks are not, and the INTERNAL log line carries the RPC's trace id.
func TestTracingOfRPCs(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		tp.Shutdown(context.Background())
	})

	var logs bytes.Buffer
	log := NewLogger(&logs, slog.LevelInfo, "svc", "svc-1")
	srv := grpc.NewServer(grpc.StatsHandler(ServerStatsHandler()), grpc.ChainUnaryInterceptor(UnaryErrorInterceptor(log)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	testpb.RegisterTestServiceServer(srv, failingTestService{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(ClientStatsHandler()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ctx := context.Background()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := testpb.NewTestServiceClient(conn).EmptyCall(ctx, &testpb.Empty{}); err == nil {
		t.Fatal("EmptyCall succeeded")
	}
	srv.GracefulStop() // the server span ends when the RPC does

	var names []string
	traceIDs := map[string]bool{}
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
		traceIDs[s.SpanContext().TraceID().String()] = true
	}
	joined := strings.Join(names, ",")
	if strings.Contains(joined, "grpc.health") {
		t.Fatalf("health check traced: %v", names)
	}
	if len(names) != 2 || len(traceIDs) != 1 {
		t.Fatalf("spans %v in %d traces; want client and server span of EmptyCall in one trace", names, len(traceIDs))
	}
	for id := range traceIDs {
		if !strings.Contains(logs.String(), `"trace_id":"`+id+`"`) {
			t.Fatalf("error log lacks trace id %s: %s", id, logs.String())
		}
	}
}
