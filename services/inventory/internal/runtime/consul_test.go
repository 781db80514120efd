package runtime

import (
	"reflect"
	"testing"

	consul "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestRegistrationFollowsContract(t *testing.T) {
	cfg := Config{ServiceName: "inventory", ServiceVersion: "v1", InstanceID: "inventory-a", Host: "127.0.0.1"}
	got := Registration(cfg, 7001, 7002)
	want := &consul.AgentServiceRegistration{
		ID: "inventory-a", Name: "inventory", Address: "127.0.0.1", Port: 7001,
		Tags: []string{"v1", "go"},
		Meta: map[string]string{"version": "v1", "language": "go", "admin_port": "7002"},
		Check: &consul.AgentServiceCheck{
			GRPC: "127.0.0.1:7002", GRPCUseTLS: false, Interval: "1s", Timeout: "1s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("registration = %+v\nwant %+v", got, want)
	}
}

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
