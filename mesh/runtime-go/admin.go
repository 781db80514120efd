package mesh

import (
	"fmt"
	"maps"

	"google.golang.org/grpc"
	"google.golang.org/grpc/admin"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	_ "google.golang.org/grpc/xds" // registers CSDS with the admin package
)

// newAdminServer is the plain (not xDS-managed) server of the admin port, so that Consul and
// operators can reach an instance before the control plane knows it: health (Watch works),
// reflection listing the business services too, and grpc-go's admin services (CSDS, the
// instance's own xDS client config; channelz). cleanup releases the admin services.
func newAdminServer(hs *health.Server, business reflection.ServiceInfoProvider) (_ *grpc.Server, cleanup func(), _ error) {
	srv := grpc.NewServer(grpc.StatsHandler(ServerStatsHandler()))
	healthpb.RegisterHealthServer(srv, hs)
	refl := reflection.ServerOptions{Services: serviceUnion{srv, business}}
	reflectionv1.RegisterServerReflectionServer(srv, reflection.NewServerV1(refl))
	reflectionv1alpha.RegisterServerReflectionServer(srv, reflection.NewServer(refl))
	cleanup, err := admin.Register(srv)
	if err != nil {
		return nil, nil, fmt.Errorf("admin services: %w", err)
	}
	return srv, cleanup, nil
}

// serviceUnion lets reflection on the admin port list the business services too.
type serviceUnion []reflection.ServiceInfoProvider

func (u serviceUnion) GetServiceInfo() map[string]grpc.ServiceInfo {
	all := map[string]grpc.ServiceInfo{}
	for _, p := range u {
		maps.Copy(all, p.GetServiceInfo())
	}
	return all
}
