package server

import (
	"context"
	"net"
	"slices"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	catalogv1 "polymesh.local/gen/go/shop/catalog/v1"
)

// catalogStub answers like the catalog: NOT_FOUND from BatchGetProducts when any id is unknown,
// with the details chosen by the test.
type catalogStub struct {
	catalogv1.UnimplementedCatalogServiceServer
	known   map[string]bool
	details func(unknown []string) []*errdetails.ErrorInfo
	code    codes.Code // when set, every call fails with it
}

func (c *catalogStub) BatchGetProducts(_ context.Context, req *catalogv1.BatchGetProductsRequest) (*catalogv1.BatchGetProductsResponse, error) {
	if c.code != codes.OK {
		return nil, status.Error(c.code, "broken")
	}
	var unknown []string
	resp := &catalogv1.BatchGetProductsResponse{}
	for _, id := range req.GetIds() {
		if !c.known[id] {
			unknown = append(unknown, id)
		}
		resp.Products = append(resp.Products, &catalogv1.Product{Id: id})
	}
	if len(unknown) == 0 {
		return resp, nil
	}
	st := status.New(codes.NotFound, "unknown products")
	for _, d := range c.details(unknown) {
		st, _ = st.WithDetails(d)
	}
	return nil, st.Err()
}

func (c *catalogStub) GetProduct(_ context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	if !c.known[req.GetId()] {
		return nil, status.Error(codes.NotFound, "unknown product")
	}
	return &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: req.GetId()}}, nil
}

func serveCatalog(t *testing.T, stub *catalogStub) CatalogChecker {
	t.Helper()
	srv := grpc.NewServer()
	catalogv1.RegisterCatalogServiceServer(srv, stub)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return CatalogChecker{Client: catalogv1.NewCatalogServiceClient(conn)}
}

func TestCatalogCheckerReadsUnknownIDs(t *testing.T) {
	known := map[string]bool{"a": true, "b": true}
	ask := []string{"a", "x", "b", "y", "x"}
	cases := map[string]func([]string) []*errdetails.ErrorInfo{
		"one ErrorInfo per id": func(unknown []string) []*errdetails.ErrorInfo {
			var out []*errdetails.ErrorInfo
			for _, id := range unknown {
				out = append(out, &errdetails.ErrorInfo{Reason: "UNKNOWN_PRODUCT", Metadata: map[string]string{"product_id": id}})
			}
			return out
		},
		"comma-separated ids": func(unknown []string) []*errdetails.ErrorInfo {
			return []*errdetails.ErrorInfo{{Reason: "UNKNOWN_PRODUCT", Metadata: map[string]string{"product_ids": "x,y"}}}
		},
		"no details: asks one by one": func([]string) []*errdetails.ErrorInfo { return nil },
	}
	for name, details := range cases {
		t.Run(name, func(t *testing.T) {
			c := serveCatalog(t, &catalogStub{known: known, details: details})
			got, err := c.UnknownProducts(context.Background(), ask)
			if err != nil || !slices.Equal(got, []string{"x", "y"}) {
				t.Fatalf("unknown = %v, %v; want [x y]", got, err)
			}
			got, err = c.UnknownProducts(context.Background(), []string{"a", "b"})
			if err != nil || len(got) != 0 {
				t.Fatalf("all known: %v, %v", got, err)
			}
		})
	}
}

func TestCatalogCheckerPassesOtherErrors(t *testing.T) {
	c := serveCatalog(t, &catalogStub{code: codes.Unavailable})
	_, err := c.UnknownProducts(context.Background(), []string{"a"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want UNAVAILABLE", err)
	}
}
