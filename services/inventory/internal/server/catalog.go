package server

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	mesh "polymesh.local/mesh/runtime-go"

	catalogv1 "polymesh.local/gen/go/shop/catalog/v1"
)

// CatalogChecker asks the catalog service with BatchGetProducts. Its calls carry the deadline of
// the RPC being handled (the runtime's client applies MESH_CALL_TIMEOUT when there is none).
type CatalogChecker struct {
	Client catalogv1.CatalogServiceClient
}

// UnknownProducts implements ProductChecker. BatchGetProducts answers NOT_FOUND when any id is
// unknown, naming them in its ErrorInfo's metadata key resource_ids (docs/runtime-contract.md,
// "Errors"); a NOT_FOUND that names none breaks that contract and is returned as the error.
func (c CatalogChecker) UnknownProducts(ctx context.Context, ids []string) ([]string, error) {
	ids = uniq(ids)
	_, err := c.Client.BatchGetProducts(ctx, &catalogv1.BatchGetProductsRequest{Ids: ids})
	if err == nil {
		return nil, nil
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.NotFound {
		return nil, err
	}
	named := namedInDetails(st)
	if len(named) == 0 {
		return nil, fmt.Errorf("catalog's NOT_FOUND names no %s: %w", mesh.ResourceIDsKey, err)
	}
	var unknown []string
	for _, id := range ids {
		if slices.Contains(named, id) {
			unknown = append(unknown, id)
		}
	}
	return unknown, nil
}

// namedInDetails returns the ids a NOT_FOUND status names in its ErrorInfo.
func namedInDetails(st *status.Status) []string {
	var named []string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			for _, id := range strings.Split(info.GetMetadata()[mesh.ResourceIDsKey], ",") {
				if id = strings.TrimSpace(id); id != "" {
					named = append(named, id)
				}
			}
		}
	}
	return named
}

func uniq(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}
