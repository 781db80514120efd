package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
)

// Env is what the runtime hands to a service's Setup.
type Env struct {
	Config Config
	Log    *slog.Logger
}

// Target is the xDS target of a mesh service: `xds:///NAME:PORT`, PORT being the service port
// MESH_SERVICE_PORTS declares for it; with MESH_XDS off, `dns:///NAME.NAMESPACE.svc.cluster.local:PORT`
// (the Kubernetes Service, whose traffic the Envoy sidecar intercepts). istiod answers only names with a port, so an undeclared
// service is an error (naming the variable) rather than a portless name that never resolves.
func (c Config) Target(service string) (string, error) {
	port, ok := c.ServicePorts[service]
	if !ok {
		return "", fmt.Errorf("%s declares no port for %q (add %s=PORT)", EnvServicePorts, service, service)
	}
	if !c.XDS {
		return "dns:///" + service + "." + c.Namespace + ".svc.cluster.local:" + strconv.Itoa(port), nil
	}
	return "xds:///" + service + ":" + strconv.Itoa(port), nil
}

// Dial opens a client to another mesh service by name (see Config.Target), with xDS channel
// credentials whose fallback is insecure, tracing, wait-for-ready, and MESH_CALL_TIMEOUT on calls
// whose context has no deadline. A call made with a handler's context carries the incoming
// deadline and is cancelled with the incoming call, and carries its routing headers
// (propagation.go). The caller closes the connection.
func (e *Env) Dial(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	target, err := e.Config.Target(service)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials() // MESH_XDS off: plain gRPC, the sidecar does TLS
	if e.Config.XDS {
		creds, err = xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return nil, fmt.Errorf("xDS client credentials: %w", err)
		}
	}
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithStatsHandler(ClientStatsHandler()),
		// A peer that is restarting is waited for, within the call's deadline.
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
		grpc.WithChainUnaryInterceptor(UnaryCallTimeout(e.Config.CallTimeout), UnaryPropagateHeaders(e.Config.PropagateHeaders)),
		grpc.WithChainStreamInterceptor(StreamCallTimeout(e.Config.CallTimeout), StreamPropagateHeaders(e.Config.PropagateHeaders)),
	}
	return grpc.NewClient(target, append(base, opts...)...)
}

// UnaryCallTimeout gives a call without a deadline one of timeout; a deadline already set (the
// incoming call's, or the caller's own) is kept.
func UnaryCallTimeout(timeout time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// StreamCallTimeout is UnaryCallTimeout for streams: the timeout bounds the whole stream, and its
// timer is released when the stream ends.
func StreamCallTimeout(timeout time.Duration) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if _, ok := ctx.Deadline(); ok {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		stream, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		return &timedStream{ClientStream: stream, cancel: cancel}, nil
	}
}

// timedStream releases its timeout once the stream has ended (RecvMsg returned an error, io.EOF
// included).
type timedStream struct {
	grpc.ClientStream
	cancel context.CancelFunc
	once   sync.Once
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.once.Do(s.cancel)
	}
	return err
}
