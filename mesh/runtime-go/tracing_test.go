package mesh

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	statuspb "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

// Business RPCs are traced on client and server with one trace id (W3C propagation); calls of the
// admin services on the admin port (health, both reflections, CSDS) are not; and the INTERNAL log
// line carries the RPC's trace id.
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

	logs := &lockedBuffer{}
	log := NewLogger(logs, slog.LevelInfo, "svc", "svc-1")
	srv, cleanup, err := newAdminServer(health.NewServer(), serviceUnion{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	// The business service on the same server: the point is which calls make spans.
	biz := grpc.NewServer(grpc.StatsHandler(ServerStatsHandler()), grpc.ChainUnaryInterceptor(UnaryErrorInterceptor(log)))
	testpb.RegisterTestServiceServer(biz, &failWith{err: errors.New("database is locked")})
	adminConn, bizConn := serveAndDial(t, srv), serveAndDial(t, biz)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(adminConn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	listServices := &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}
	v1, err := reflectionv1.NewServerReflectionClient(adminConn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v1.Send(listServices); err != nil {
		t.Fatal(err)
	}
	answer, err := v1.Recv()
	if err != nil {
		t.Fatal(err)
	}
	v1.CloseSend()
	v1alpha, err := reflectionv1alpha.NewServerReflectionClient(adminConn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v1alpha.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v1alpha.Recv(); err != nil {
		t.Fatal(err)
	}
	v1alpha.CloseSend()
	if _, err := statuspb.NewClientStatusDiscoveryServiceClient(adminConn).FetchClientStatus(ctx, &statuspb.ClientStatusRequest{}); err != nil {
		t.Fatalf("CSDS on the admin server: %v", err)
	}
	var listed []string
	for _, s := range answer.GetListServicesResponse().GetService() {
		listed = append(listed, s.GetName())
	}
	if !slices.Contains(listed, "envoy.service.status.v3.ClientStatusDiscoveryService") {
		t.Fatalf("reflection lists %v, without CSDS", listed)
	}
	if _, err := testpb.NewTestServiceClient(bizConn).EmptyCall(ctx, &testpb.Empty{}); err == nil {
		t.Fatal("EmptyCall succeeded")
	}
	biz.GracefulStop() // the server span ends when the RPC does
	srv.Stop()

	var names []string
	traceIDs := map[string]bool{}
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
		traceIDs[s.SpanContext().TraceID().String()] = true
	}
	if len(names) != 2 || len(traceIDs) != 1 || !strings.Contains(strings.Join(names, ","), "EmptyCall") {
		t.Fatalf("spans %v in %d traces; want only the client and server span of EmptyCall, in one trace", names, len(traceIDs))
	}
	for id := range traceIDs {
		if !strings.Contains(logs.String(), `"trace_id":"`+id+`"`) {
			t.Fatalf("error log lacks trace id %s: %s", id, logs.String())
		}
	}
}

// serveAndDial serves srv on a free port of 127.0.0.1 and returns a traced client of it.
func serveAndDial(t *testing.T, srv *grpc.Server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(serveOn(t, srv), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(ClientStatsHandler()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
