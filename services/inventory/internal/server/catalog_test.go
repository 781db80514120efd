package server

import (
	"context"
	"net"
	"slices"
	"strings"
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

// The unknown ids come from the one metadata key of the contract, resource_ids, in the order
// asked; a NOT_FOUND without it is an error, not a guess.
func TestCatalogCheckerReadsUnknownIDs(t *testing.T) {
	known := map[string]bool{"a": true, "b": true}
	c := serveCatalog(t, &catalogStub{known: known, details: func(unknown []string) []*errdetails.ErrorInfo {
		return []*errdetails.ErrorInfo{{Reason: "UNKNOWN_PRODUCT", Metadata: map[string]string{"resource_ids": strings.Join(unknown, ",")}}}
	}})
	got, err := c.UnknownProducts(context.Background(), []string{"y", "a", "x", "b", "y"})
	if err != nil || !slices.Equal(got, []string{"y", "x"}) {
		t.Fatalf("unknown = %v, %v; want [y x]", got, err)
	}
	got, err = c.UnknownProducts(context.Background(), []string{"a", "b"})
	if err != nil || len(got) != 0 {
		t.Fatalf("all known: %v, %v", got, err)
	}

	old := serveCatalog(t, &catalogStub{known: known, details: func([]string) []*errdetails.ErrorInfo {
		return []*errdetails.ErrorInfo{{Reason: "UNKNOWN_PRODUCT", Metadata: map[string]string{"product_ids": "x"}}}
	}})
	if got, err := old.UnknownProducts(context.Background(), []string{"a", "x"}); err == nil || !strings.Contains(err.Error(), "resource_ids") {
		t.Fatalf("NOT_FOUND without resource_ids: %v, %v; want an error naming resource_ids", got, err)
	}
}

func TestCatalogCheckerPassesOtherErrors(t *testing.T) {
	c := serveCatalog(t, &catalogStub{code: codes.Unavailable})
	_, err := c.UnknownProducts(context.Background(), []string{"a"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want UNAVAILABLE", err)
	}
}
