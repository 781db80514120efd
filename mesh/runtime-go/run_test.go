package mesh

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/xds"
)

// Health follows gRPC's reports of the xDS listener: NOT_SERVING until it arrives, SERVING with
// it, NOT_SERVING again when the control plane withdraws it or sends one the server rejects, and
// SERVING when it is back; for "" and every business service.
func TestHealthFollowsTheServerListener(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7001}
	inst := &instance{
		cfg:         Config{Register: false},
		log:         NewLogger(io.Discard, slog.LevelInfo, "svc", "svc-1"),
		health:      health.NewServer(),
		names:       []string{"shop.x.v1.XService"},
		bizAddr:     addr,
		adminAddr:   &net.TCPAddr{IP: addr.IP, Port: 7002},
		serveErr:    make(chan error, 2),
		modeChanged: make(chan struct{}, 1),
	}
	inst.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- inst.serve(ctx) }()

	expect := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			all := true
			for _, service := range append([]string{""}, inst.names...) {
				got, err := inst.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
				all = all && err == nil && got.GetStatus() == want
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health is not %v within 2 s", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	expect(healthpb.HealthCheckResponse_NOT_SERVING)
	inst.onServingMode(addr, xds.ServingModeChangeArgs{Mode: connectivity.ServingModeServing})
	expect(healthpb.HealthCheckResponse_SERVING)
	inst.onServingMode(addr, xds.ServingModeChangeArgs{Mode: connectivity.ServingModeNotServing,
		Err: errors.New("resource removed by the control plane")})
	expect(healthpb.HealthCheckResponse_NOT_SERVING)
	inst.onServingMode(addr, xds.ServingModeChangeArgs{Mode: connectivity.ServingModeServing})
	expect(healthpb.HealthCheckResponse_SERVING)

	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("serve returned %d", code)
	}
}
