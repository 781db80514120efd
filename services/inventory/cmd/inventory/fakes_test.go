package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	listenerType         = "type.googleapis.com/envoy.config.listener.v3.Listener"
	serverListenerPrefix = "grpc/server?xds.resource.listening_address="
)

// fakeADS is the smallest ADS server that makes an xDS-managed gRPC server serve: it answers
// LDS requests for server listeners with a plaintext listener whose inline route config accepts
// every RPC. It answers nothing until release is called, so a test can see the server before.
type fakeADS struct {
	discoverypb.UnimplementedAggregatedDiscoveryServiceServer
	addr     string
	released chan struct{}
	once     sync.Once
	mu       sync.Mutex
	nacks    []string
}

func startFakeADS(t *testing.T) *fakeADS {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ads := &fakeADS{addr: lis.Addr().String(), released: make(chan struct{})}
	srv := grpc.NewServer()
	discoverypb.RegisterAggregatedDiscoveryServiceServer(srv, ads)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return ads
}

func (a *fakeADS) release() { a.once.Do(func() { close(a.released) }) }

func (a *fakeADS) nackList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.nacks...)
}

func (a *fakeADS) StreamAggregatedResources(stream discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	version := 0
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if req.GetErrorDetail() != nil {
			a.mu.Lock()
			a.nacks = append(a.nacks, req.GetErrorDetail().GetMessage())
			a.mu.Unlock()
			continue
		}
		if req.GetTypeUrl() != listenerType || req.GetResponseNonce() != "" && req.GetVersionInfo() == strconv.Itoa(version) {
			continue // an ACK, or a type this fake does not serve
		}
		select {
		case <-a.released:
		case <-stream.Context().Done():
			return nil
		}
		version++
		resp := &discoverypb.DiscoveryResponse{TypeUrl: listenerType, VersionInfo: strconv.Itoa(version), Nonce: strconv.Itoa(version)}
		for _, name := range req.GetResourceNames() {
			l, err := serverListener(name)
			if err != nil {
				return err
			}
			resp.Resources = append(resp.Resources, l)
		}
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}

func serverListener(name string) (*anypb.Any, error) {
	hostPort, ok := strings.CutPrefix(name, serverListenerPrefix)
	if !ok {
		return nil, fmt.Errorf("not a server listener: %q", name)
	}
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, err
	}
	router, err := anypb.New(&routerpb.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmpb.HttpConnectionManager{
		RouteSpecifier: &hcmpb.HttpConnectionManager_RouteConfig{RouteConfig: &routepb.RouteConfiguration{
			Name: "inbound",
			VirtualHosts: []*routepb.VirtualHost{{
				Name:    "all",
				Domains: []string{"*"},
				Routes: []*routepb.Route{{
					Match:  &routepb.RouteMatch{PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routepb.Route_NonForwardingAction{NonForwardingAction: &routepb.NonForwardingAction{}},
				}},
			}},
		}},
		HttpFilters: []*hcmpb.HttpFilter{{Name: "router", ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	return anypb.New(&listenerpb.Listener{
		Name: name,
		Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
			Address: host, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: uint32(port)},
		}}},
		FilterChains: []*listenerpb.FilterChain{{
			Name:    "plaintext",
			Filters: []*listenerpb.Filter{{Name: "hcm", ConfigType: &listenerpb.Filter_TypedConfig{TypedConfig: hcm}}},
		}},
	})
}

// fakeConsul records the agent API calls the runtime makes.
type fakeConsul struct {
	addr  string
	mu    sync.Mutex
	regs  []map[string]any
	dereg []string
}

func startFakeConsul(t *testing.T) *fakeConsul {
	t.Helper()
	c := &fakeConsul{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/v1/agent/service/register":
			body, _ := io.ReadAll(r.Body)
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			c.regs = append(c.regs, m)
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/agent/service/deregister/"):
			c.dereg = append(c.dereg, strings.TrimPrefix(r.URL.Path, "/v1/agent/service/deregister/"))
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/agent/service/"):
			// The runtime's registration keeper: known while registered and not deregistered.
			id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/")
			if len(c.regs) == 0 || c.regs[len(c.regs)-1]["ID"] != id || slices.Contains(c.dereg, id) {
				http.NotFound(w, r)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"ID": id, "Service": c.regs[len(c.regs)-1]["Name"]})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c.addr = strings.TrimPrefix(srv.URL, "http://")
	return c
}

func (c *fakeConsul) calls() (regs []map[string]any, dereg []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append(regs, c.regs...), append(dereg, c.dereg...)
}
