// Command conformance-go is the Go runtime's probe for tests/conformance: it serves
// polymesh.conformance.v1.ConformanceService on mesh/runtime-go and nothing else, so that every
// rule of docs/runtime-contract.md a caller can observe is checked on the Go runtime itself.
package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	conformancev1 "polymesh.local/gen/go/polymesh/conformance/v1"
	mesh "polymesh.local/mesh/runtime-go"
)

func main() {
	mesh.Main(mesh.Service{Name: "conformance", Setup: setup})
}

func setup(_ context.Context, env *mesh.Env, reg grpc.ServiceRegistrar) (func() error, error) {
	p := &probe{env: env, peers: map[string]conformancev1.ConformanceServiceClient{}}
	conformancev1.RegisterConformanceServiceServer(reg, p)
	return p.close, nil
}

// probe answers with what it saw, fails as asked, or relays to a peer.
type probe struct {
	conformancev1.UnimplementedConformanceServiceServer
	env *mesh.Env

	mu    sync.Mutex
	peers map[string]conformancev1.ConformanceServiceClient // by service name, dialled on first use
	conns []*grpc.ClientConn
}

func (p *probe) Echo(ctx context.Context, req *conformancev1.EchoRequest) (*conformancev1.EchoResponse, error) {
	// Read before anything else, so that the answer is the deadline as it arrived.
	var remainingMs int64
	if deadline, ok := ctx.Deadline(); ok {
		remainingMs = time.Until(deadline).Milliseconds()
	}
	if err := p.fail(req.GetMessage(), req.GetFailure()); err != nil {
		return nil, err
	}
	resp := &conformancev1.EchoResponse{
		Message:             req.GetMessage(),
		InstanceId:          p.env.Config.InstanceID,
		Language:            mesh.Language,
		DeadlineRemainingMs: remainingMs,
		TraceId:             traceID(ctx),
		Headers:             map[string]string{},
	}
	for name, values := range mesh.PropagatedHeaders(ctx, p.env.Config.PropagateHeaders) {
		resp.Headers[name] = strings.Join(values, ", ")
	}
	if req.GetRelayTo() != "" {
		peer, err := p.peer(req.GetRelayTo())
		if err != nil {
			return nil, err // not a status: the runtime answers INTERNAL and logs why
		}
		// The handler's ctx: the relayed call carries the incoming deadline (or MESH_CALL_TIMEOUT)
		// and routing headers, under its own metadata.
		for name, value := range req.GetRelayMetadata() {
			ctx = metadata.AppendToOutgoingContext(ctx, name, value)
		}
		relayed, err := peer.Echo(ctx, &conformancev1.EchoRequest{Message: req.GetMessage()})
		if err != nil {
			return nil, err
		}
		resp.Relayed = relayed
	}
	return resp, nil
}

func (p *probe) EchoStream(req *conformancev1.EchoStreamRequest, stream grpc.ServerStreamingServer[conformancev1.EchoStreamResponse]) error {
	for i := range req.GetCount() {
		if err := stream.Send(&conformancev1.EchoStreamResponse{Message: req.GetMessage(), Index: i}); err != nil {
			return err
		}
	}
	return p.fail(req.GetMessage(), req.GetFailure())
}

// fail is the failure the request asks for, nil for none. FAILURE_UNEXPECTED panics: turning that
// into INTERNAL "internal error" is the runtime's job, which is what the suite checks.
func (p *probe) fail(message string, failure conformancev1.Failure) error {
	switch failure {
	case conformancev1.Failure_FAILURE_INVALID_ARGUMENT:
		return mesh.InvalidArgument(mesh.FieldViolation{Field: "message", Description: "rejected as asked"})
	case conformancev1.Failure_FAILURE_NOT_FOUND:
		return mesh.NotFound(fmt.Sprintf("message %q not found", message), "MESSAGE_NOT_FOUND",
			mesh.Domain(p.env.Config.ServiceName), message)
	case conformancev1.Failure_FAILURE_UNEXPECTED:
		panic("failing as asked: " + message)
	}
	return nil
}

// peer is a client of the named mesh service; one connection per service for the probe's life.
func (p *probe) peer(service string) (conformancev1.ConformanceServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if client, ok := p.peers[service]; ok {
		return client, nil
	}
	conn, err := p.env.Dial(service)
	if err != nil {
		return nil, fmt.Errorf("relay to %s: %w", service, err)
	}
	p.conns = append(p.conns, conn)
	client := conformancev1.NewConformanceServiceClient(conn)
	p.peers[service] = client
	return client, nil
}

func (p *probe) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, conn := range p.conns {
		conn.Close()
	}
	return nil
}

// traceID is the trace id of the server span handling ctx, "" when there is none.
func traceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
