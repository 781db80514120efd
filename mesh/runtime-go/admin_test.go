package mesh

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestServiceUnionListsBothServers(t *testing.T) {
	a, b := grpc.NewServer(), grpc.NewServer()
	healthpb.RegisterHealthServer(a, health.NewServer())
	b.RegisterService(&grpc.ServiceDesc{ServiceName: "x.Y", HandlerType: (*any)(nil)}, struct{}{})
	got := serviceUnion{a, b}.GetServiceInfo()
	if _, ok := got["grpc.health.v1.Health"]; !ok {
		t.Fatalf("missing health: %v", got)
	}
	if _, ok := got["x.Y"]; !ok || len(got) != 2 {
		t.Fatalf("services = %v", got)
	}
}
