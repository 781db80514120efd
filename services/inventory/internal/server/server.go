// Package server implements shop.inventory.v1.InventoryService on top of the store.
package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	mesh "polymesh.local/mesh/runtime-go"

	inventoryv1 "polymesh.local/gen/go/shop/inventory/v1"
	"polymesh.local/services/inventory/internal/store"
)

// Domain is the ErrorInfo domain of this service's errors.
var Domain = mesh.Domain("inventory")

// ErrorInfo reasons.
const (
	ReasonUnknownProduct      = "UNKNOWN_PRODUCT"
	ReasonOutOfStock          = "OUT_OF_STOCK"
	ReasonReservationMismatch = "RESERVATION_MISMATCH"
	ReasonAlreadyCommitted    = "ALREADY_COMMITTED"
	ReasonReservationReleased = "RESERVATION_RELEASED"
	ReasonReservationNotFound = "RESERVATION_NOT_FOUND"
	ReasonCatalogUnavailable  = "CATALOG_UNAVAILABLE"
)

// ProductChecker tells which products the catalog does not know.
type ProductChecker interface {
	// UnknownProducts returns the ids among ids that the catalog does not know, in the order given.
	UnknownProducts(ctx context.Context, ids []string) ([]string, error)
}

// Server is the InventoryService.
type Server struct {
	inventoryv1.UnimplementedInventoryServiceServer
	store   *store.Store
	catalog ProductChecker
}

// New returns the service over st, checking products with catalog.
func New(st *store.Store, catalog ProductChecker) *Server {
	return &Server{store: st, catalog: catalog}
}

// GetStock returns the units that can still be reserved. A product without a stock row has 0 if
// the catalog knows it and is NOT_FOUND otherwise.
func (s *Server) GetStock(ctx context.Context, req *inventoryv1.GetStockRequest) (*inventoryv1.GetStockResponse, error) {
	var v violations
	v.required("product_id", req.GetProductId())
	if err := v.err(); err != nil {
		return nil, err
	}
	available, found, err := s.store.Available(ctx, req.GetProductId())
	if err != nil {
		return nil, err
	}
	if !found {
		if err := s.checkProducts(ctx, []string{req.GetProductId()}); err != nil {
			return nil, err
		}
	}
	return &inventoryv1.GetStockResponse{ProductId: req.GetProductId(), Available: available}, nil
}

// ReserveStock holds stock for every item or for none; idempotent by reservation_id.
func (s *Server) ReserveStock(ctx context.Context, req *inventoryv1.ReserveStockRequest) (*inventoryv1.ReserveStockResponse, error) {
	if err := validateReserve(req); err != nil {
		return nil, err
	}
	items := make([]store.Item, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = store.Item{ProductID: it.GetProductId(), Quantity: int64(it.GetQuantity())}
	}
	// A retry of an existing reservation needs no catalog round trip; the store decides its answer.
	_, err := s.store.Reservation(ctx, req.GetReservationId())
	switch {
	case errors.Is(err, store.ErrReservationNotFound):
		ids := make([]string, len(items))
		for i, it := range items {
			ids[i] = it.ProductID
		}
		if err := s.checkProducts(ctx, ids); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	r, err := s.store.Reserve(ctx, req.GetReservationId(), items)
	if err != nil {
		return nil, domainError(err)
	}
	return &inventoryv1.ReserveStockResponse{Reservation: toProto(r)}, nil
}

// ReleaseStock gives a held reservation's stock back; idempotent.
func (s *Server) ReleaseStock(ctx context.Context, req *inventoryv1.ReleaseStockRequest) (*inventoryv1.ReleaseStockResponse, error) {
	var v violations
	v.required("reservation_id", req.GetReservationId())
	if err := v.err(); err != nil {
		return nil, err
	}
	r, err := s.store.Release(ctx, req.GetReservationId())
	if err != nil {
		return nil, domainError(err)
	}
	return &inventoryv1.ReleaseStockResponse{Reservation: toProto(r)}, nil
}

// CommitReservation turns a held reservation into a sale; idempotent.
func (s *Server) CommitReservation(ctx context.Context, req *inventoryv1.CommitReservationRequest) (*inventoryv1.CommitReservationResponse, error) {
	var v violations
	v.required("reservation_id", req.GetReservationId())
	if err := v.err(); err != nil {
		return nil, err
	}
	r, err := s.store.Commit(ctx, req.GetReservationId())
	if err != nil {
		return nil, domainError(err)
	}
	return &inventoryv1.CommitReservationResponse{Reservation: toProto(r)}, nil
}

func validateReserve(req *inventoryv1.ReserveStockRequest) error {
	var v violations
	v.required("reservation_id", req.GetReservationId())
	if len(req.GetItems()) == 0 {
		v.add("items", "at least one item is required")
	}
	for i, it := range req.GetItems() {
		v.required(fmt.Sprintf("items[%d].product_id", i), it.GetProductId())
		if it.GetQuantity() < 1 {
			v.add(fmt.Sprintf("items[%d].quantity", i), fmt.Sprintf("must be at least 1, got %d", it.GetQuantity()))
		}
	}
	return v.err()
}

// checkProducts is NOT_FOUND (UNKNOWN_PRODUCT, naming every unknown product) unless the catalog
// knows every id.
func (s *Server) checkProducts(ctx context.Context, ids []string) error {
	unknown, err := s.catalog.UnknownProducts(ctx, ids)
	if err != nil {
		if st, ok := status.FromError(err); ok && (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded) {
			return mesh.Unavailable("catalog unavailable", ReasonCatalogUnavailable, Domain)
		}
		return fmt.Errorf("catalog: %w", err)
	}
	if len(unknown) == 0 {
		return nil
	}
	return mesh.NotFound("unknown products: "+strings.Join(unknown, ", "), ReasonUnknownProduct, Domain, unknown...)
}

// domainError maps the store's errors to gRPC statuses; anything else goes on unchanged and
// becomes INTERNAL in the runtime's interceptor.
func domainError(err error) error {
	var oos *store.OutOfStockError
	switch {
	case errors.As(err, &oos):
		return mesh.FailedPrecondition(fmt.Sprintf("out of stock: %s", oos.ProductID), ReasonOutOfStock, Domain,
			map[string]string{
				"product_id": oos.ProductID,
				"requested":  strconv.FormatInt(oos.Requested, 10),
				"available":  strconv.FormatInt(oos.Available, 10),
			})
	case errors.Is(err, store.ErrReservationMismatch):
		return mesh.AlreadyExists("reservation exists with different items", ReasonReservationMismatch, Domain, nil)
	case errors.Is(err, store.ErrAlreadyCommitted):
		return mesh.FailedPrecondition("reservation already committed", ReasonAlreadyCommitted, Domain, nil)
	case errors.Is(err, store.ErrReservationReleased):
		return mesh.FailedPrecondition("reservation was released", ReasonReservationReleased, Domain, nil)
	case errors.Is(err, store.ErrReservationNotFound):
		return mesh.FailedPrecondition("reservation not found", ReasonReservationNotFound, Domain, nil)
	}
	return err
}

// violations collects every bad field of a request for one google.rpc.BadRequest.
type violations []mesh.FieldViolation

func (v *violations) add(field, desc string) {
	*v = append(*v, mesh.FieldViolation{Field: field, Description: desc})
}

func (v *violations) required(field, value string) {
	if value == "" {
		v.add(field, "required")
	}
}

func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	return mesh.InvalidArgument(v...)
}

func toProto(r store.Reservation) *inventoryv1.Reservation {
	out := &inventoryv1.Reservation{Id: r.ID, Status: toProtoStatus(r.Status)}
	for _, it := range r.Items {
		out.Items = append(out.Items, &inventoryv1.StockItem{ProductId: it.ProductID, Quantity: int32(it.Quantity)})
	}
	return out
}

func toProtoStatus(s store.Status) inventoryv1.ReservationStatus {
	switch s {
	case store.StatusHeld:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD
	case store.StatusReleased:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	case store.StatusCommitted:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
	}
	return inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED
}
