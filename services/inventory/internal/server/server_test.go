package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	inventoryv1 "polymesh.local/gen/go/shop/inventory/v1"
	mesh "polymesh.local/mesh/runtime-go"
	"polymesh.local/services/inventory/internal/store"
)

// fakeCatalog knows a fixed set of products, or fails with err.
type fakeCatalog struct {
	mu    sync.Mutex
	known map[string]bool
	err   error
	calls int
}

func (f *fakeCatalog) UnknownProducts(_ context.Context, ids []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	var unknown []string
	for _, id := range ids {
		if !f.known[id] {
			unknown = append(unknown, id)
		}
	}
	return unknown, nil
}

func (f *fakeCatalog) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeCatalog) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type fixture struct {
	client  inventoryv1.InventoryServiceClient
	catalog *fakeCatalog
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newFixture serves the InventoryService on a plain gRPC server on 127.0.0.1:0 with the runtime's
// error interceptor, a real store in a temp dir and a fake catalog.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "inventory.db"),
		map[string]int64{"sku-a": 10, "sku-b": 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat := &fakeCatalog{known: map[string]bool{"sku-a": true, "sku-b": true, "sku-new": true}}
	logs := &syncBuffer{}
	log := mesh.NewLogger(logs, slog.LevelDebug, "inventory", "inventory-test")
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(mesh.UnaryErrorInterceptor(log)))
	inventoryv1.RegisterInventoryServiceServer(srv, New(st, cat))
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
	return &fixture{client: inventoryv1.NewInventoryServiceClient(conn), catalog: cat, logs: logs}
}

func item(id string, q int32) *inventoryv1.StockItem {
	return &inventoryv1.StockItem{ProductId: id, Quantity: q}
}

func fields(t *testing.T, err error) []string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v (%v), want INVALID_ARGUMENT", st.Code(), err)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			var out []string
			for _, v := range br.GetFieldViolations() {
				if v.GetDescription() == "" {
					t.Errorf("violation %s has no description", v.GetField())
				}
				out = append(out, v.GetField())
			}
			return out
		}
	}
	t.Fatalf("no BadRequest in %v", st.Details())
	return nil
}

func errorInfo(t *testing.T, err error, code codes.Code) *errdetails.ErrorInfo {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, code)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.GetDomain() != Domain {
				t.Fatalf("domain = %q", info.GetDomain())
			}
			return info
		}
	}
	t.Fatalf("no ErrorInfo in %v", st.Details())
	return nil
}

func TestReserveValidationListsEveryViolation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cases := []struct {
		name string
		req  *inventoryv1.ReserveStockRequest
		want []string
	}{
		{"empty", &inventoryv1.ReserveStockRequest{}, []string{"reservation_id", "items"}},
		{"items", &inventoryv1.ReserveStockRequest{
			ReservationId: "r1",
			Items:         []*inventoryv1.StockItem{item("", 0), item("sku-a", 1), item("sku-b", -2)},
		}, []string{"items[0].product_id", "items[0].quantity", "items[2].quantity"}},
		{"all", &inventoryv1.ReserveStockRequest{Items: []*inventoryv1.StockItem{item("sku-a", 0)}},
			[]string{"reservation_id", "items[0].quantity"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.client.ReserveStock(ctx, c.req)
			if got := fields(t, err); !slices.Equal(got, c.want) {
				t.Fatalf("violations = %v, want %v", got, c.want)
			}
		})
	}
	if n := f.catalog.callCount(); n != 0 {
		t.Fatalf("catalog called %d times for invalid requests", n)
	}
	_, err := f.client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{Items: []*inventoryv1.StockItem{item("sku-a", 0)}})
	if msg := status.Convert(err).Message(); msg != "invalid request: reservation_id: required; items[0].quantity: must be at least 1, got 0" {
		t.Fatalf("message = %q", msg)
	}
	_, err = f.client.GetStock(ctx, &inventoryv1.GetStockRequest{})
	if got := fields(t, err); !slices.Equal(got, []string{"product_id"}) {
		t.Fatalf("GetStock violations = %v", got)
	}
	_, err = f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{})
	if got := fields(t, err); !slices.Equal(got, []string{"reservation_id"}) {
		t.Fatalf("ReleaseStock violations = %v", got)
	}
	_, err = f.client.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{})
	if got := fields(t, err); !slices.Equal(got, []string{"reservation_id"}) {
		t.Fatalf("CommitReservation violations = %v", got)
	}
}

func TestGetStock(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for id, want := range map[string]int64{"sku-a": 10, "sku-new": 0} {
		resp, err := f.client.GetStock(ctx, &inventoryv1.GetStockRequest{ProductId: id})
		if err != nil || resp.GetAvailable() != want || resp.GetProductId() != id {
			t.Fatalf("GetStock(%s) = %v, %v; want %d", id, resp, err, want)
		}
	}
	_, err := f.client.GetStock(ctx, &inventoryv1.GetStockRequest{ProductId: "sku-nope"})
	info := errorInfo(t, err, codes.NotFound)
	if info.GetReason() != ReasonUnknownProduct || info.GetMetadata()["resource_ids"] != "sku-nope" {
		t.Fatalf("info = %v", info)
	}
}

func TestReserveLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	req := &inventoryv1.ReserveStockRequest{ReservationId: "o1", Items: []*inventoryv1.StockItem{item("sku-a", 3), item("sku-b", 1)}}
	want := &inventoryv1.Reservation{Id: "o1", Items: req.Items, Status: inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD}
	resp, err := f.client.ReserveStock(ctx, req)
	if err != nil || !proto.Equal(resp.GetReservation(), want) {
		t.Fatalf("reserve = %v, %v", resp, err)
	}
	calls := f.catalog.callCount()
	resp, err = f.client.ReserveStock(ctx, req)
	if err != nil || !proto.Equal(resp.GetReservation(), want) {
		t.Fatalf("retry = %v, %v", resp, err)
	}
	if f.catalog.callCount() != calls {
		t.Fatal("a retry of an existing reservation asked the catalog")
	}
	if s, _ := f.client.GetStock(ctx, &inventoryv1.GetStockRequest{ProductId: "sku-a"}); s.GetAvailable() != 7 {
		t.Fatalf("sku-a = %d after reserve and retry, want 7", s.GetAvailable())
	}

	_, err = f.client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{ReservationId: "o1", Items: []*inventoryv1.StockItem{item("sku-a", 4)}})
	if info := errorInfo(t, err, codes.AlreadyExists); info.GetReason() != ReasonReservationMismatch {
		t.Fatalf("mismatch reason = %s", info.GetReason())
	}

	c, err := f.client.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{ReservationId: "o1"})
	if err != nil || c.GetReservation().GetStatus() != inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED {
		t.Fatalf("commit = %v, %v", c, err)
	}
	_, err = f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{ReservationId: "o1"})
	if info := errorInfo(t, err, codes.FailedPrecondition); info.GetReason() != ReasonAlreadyCommitted {
		t.Fatalf("release committed reason = %s", info.GetReason())
	}
}

func TestReserveErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{
		ReservationId: "o1", Items: []*inventoryv1.StockItem{item("sku-a", 1), item("sku-ghost", 1)}})
	info := errorInfo(t, err, codes.NotFound)
	if info.GetReason() != ReasonUnknownProduct || info.GetMetadata()["resource_ids"] != "sku-ghost" {
		t.Fatalf("unknown product info = %v", info)
	}
	if msg := status.Convert(err).Message(); msg != "unknown products: sku-ghost" {
		t.Fatalf("message = %q", msg)
	}

	_, err = f.client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{
		ReservationId: "o2", Items: []*inventoryv1.StockItem{item("sku-a", 1), item("sku-b", 3)}})
	info = errorInfo(t, err, codes.FailedPrecondition)
	wantMD := map[string]string{"product_id": "sku-b", "requested": "3", "available": "2"}
	if info.GetReason() != ReasonOutOfStock || !maps.Equal(info.GetMetadata(), wantMD) {
		t.Fatalf("out of stock info = %v", info)
	}
	if s, _ := f.client.GetStock(ctx, &inventoryv1.GetStockRequest{ProductId: "sku-a"}); s.GetAvailable() != 10 {
		t.Fatalf("sku-a = %d after a failed reservation, want 10", s.GetAvailable())
	}
	// Known to the catalog but never stocked: out of stock with 0 available.
	_, err = f.client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{
		ReservationId: "o3", Items: []*inventoryv1.StockItem{item("sku-new", 1)}})
	if info := errorInfo(t, err, codes.FailedPrecondition); info.GetMetadata()["available"] != "0" {
		t.Fatalf("sku-new info = %v", info)
	}
}

func TestReleaseAndCommitStates(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	released := inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED

	// Release before reserve: a tombstone, and the late reserve holds nothing.
	r, err := f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{ReservationId: "late"})
	if err != nil || !proto.Equal(r.GetReservation(), &inventoryv1.Reservation{Id: "late", Status: released}) {
		t.Fatalf("release unknown = %v, %v", r, err)
	}
	rs, err := f.client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{ReservationId: "late", Items: []*inventoryv1.StockItem{item("sku-b", 2)}})
	if err != nil || rs.GetReservation().GetStatus() != released || len(rs.GetReservation().GetItems()) != 0 {
		t.Fatalf("late reserve = %v, %v", rs, err)
	}
	if s, _ := f.client.GetStock(ctx, &inventoryv1.GetStockRequest{ProductId: "sku-b"}); s.GetAvailable() != 2 {
		t.Fatalf("sku-b = %d, want 2", s.GetAvailable())
	}
	_, err = f.client.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{ReservationId: "late"})
	if info := errorInfo(t, err, codes.FailedPrecondition); info.GetReason() != ReasonReservationReleased {
		t.Fatalf("commit released reason = %s", info.GetReason())
	}
	_, err = f.client.CommitReservation(ctx, &inventoryv1.CommitReservationRequest{ReservationId: "never"})
	if info := errorInfo(t, err, codes.FailedPrecondition); info.GetReason() != ReasonReservationNotFound {
		t.Fatalf("commit unknown reason = %s", info.GetReason())
	}

	// Held -> released twice, stock back once.
	if _, err := f.client.ReserveStock(ctx, &inventoryv1.ReserveStockRequest{ReservationId: "o1", Items: []*inventoryv1.StockItem{item("sku-b", 2)}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r, err := f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{ReservationId: "o1"})
		if err != nil || r.GetReservation().GetStatus() != released || len(r.GetReservation().GetItems()) != 1 {
			t.Fatalf("release = %v, %v", r, err)
		}
	}
	if s, _ := f.client.GetStock(ctx, &inventoryv1.GetStockRequest{ProductId: "sku-b"}); s.GetAvailable() != 2 {
		t.Fatalf("sku-b = %d, want 2", s.GetAvailable())
	}
}

func TestCatalogFailures(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	req := &inventoryv1.ReserveStockRequest{ReservationId: "o1", Items: []*inventoryv1.StockItem{item("sku-a", 1)}}

	f.catalog.fail(status.Error(codes.Unavailable, "no healthy upstream"))
	_, err := f.client.ReserveStock(ctx, req)
	if info := errorInfo(t, err, codes.Unavailable); info.GetReason() != ReasonCatalogUnavailable {
		t.Fatalf("reason = %s", info.GetReason())
	}

	f.catalog.fail(errors.New("secret detail"))
	_, err = f.client.ReserveStock(ctx, req)
	st := status.Convert(err)
	if st.Code() != codes.Internal || st.Message() != mesh.InternalMessage {
		t.Fatalf("unexpected error = %v, want INTERNAL %q", err, mesh.InternalMessage)
	}
	if !strings.Contains(f.logs.String(), "secret detail") {
		t.Fatalf("detail not logged: %s", f.logs.String())
	}
}
