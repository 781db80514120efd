// Command probe calls shop.catalog.v1.CatalogService/GetProduct on an xds:/// target over and
// over and prints one JSON line per call: {"t": <unix seconds>, "backend": "<product name>"} or
// {"t": ..., "error": "..."}. The test backends answer with their own id as the product name,
// so the lines show which endpoints the gRPC xDS client is using at any moment.
//
// With -serve-port it is instead an xDS-managed grpc-go server answering with -name, which
// serves only once the control plane has sent its server listener.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds" // also registers the xds:/// resolver and balancers

	catalogv1 "polymesh.local/gen/go/shop/catalog/v1"
)

type line struct {
	T       float64 `json:"t"`
	Backend string  `json:"backend,omitempty"`
	Error   string  `json:"error,omitempty"`
}

type backend struct {
	catalogv1.UnimplementedCatalogServiceServer
	name string
}

func (b *backend) GetProduct(_ context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	return &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: req.GetId(), Name: b.name}}, nil
}

func serve(ctx context.Context, port int, name string) error {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	server, err := xds.NewGRPCServer(grpc.Creds(creds))
	if err != nil {
		return err
	}
	catalogv1.RegisterCatalogServiceServer(server, &backend{name: name})
	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); server.GracefulStop() }()
	fmt.Printf("xDS-managed server on %s\n", lis.Addr())
	return server.Serve(lis)
}

func main() {
	target := flag.String("target", "", "xds:///NAME:PORT")
	interval := flag.Duration("interval", 10*time.Millisecond, "pause between calls")
	servePort := flag.Int("serve-port", 0, "be an xDS-managed server on 127.0.0.1:PORT instead")
	name := flag.String("name", "go", "the product name the server answers with")
	var headers []string
	flag.Func("header", "NAME=VALUE metadata sent with every call (repeatable)", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("%q: not NAME=VALUE", v)
		}
		headers = append(headers, k, val)
		return nil
	})
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *servePort != 0 {
		if err := serve(ctx, *servePort, *name); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		return
	}

	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds credentials:", err)
		os.Exit(1)
	}
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := catalogv1.NewCatalogServiceClient(conn)

	out := json.NewEncoder(os.Stdout)
	for ctx.Err() == nil {
		callCtx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, headers...), time.Second)
		resp, err := client.GetProduct(callCtx, &catalogv1.GetProductRequest{Id: "probe"})
		cancel()
		l := line{T: float64(time.Now().UnixNano()) / 1e9}
		if err != nil {
			l.Error = err.Error()
		} else {
			l.Backend = resp.GetProduct().GetName()
		}
		_ = out.Encode(l)
		select {
		case <-ctx.Done():
		case <-time.After(*interval):
		}
	}
}
