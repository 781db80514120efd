package server

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "polymesh.local/gen/go/shop/catalog/v1"
)

// catalogTimeout bounds a catalog call when the caller set no earlier deadline.
const catalogTimeout = 3 * time.Second

// CatalogChecker asks the catalog service with BatchGetProducts.
type CatalogChecker struct {
	Client catalogv1.CatalogServiceClient
}

// UnknownProducts implements ProductChecker. BatchGetProducts answers NOT_FOUND when any id is
// unknown; the unknown ids are taken from the error's details (ErrorInfo metadata product_id,
// product_ids or ids, comma-separated; ResourceInfo resource_name) or, failing that, asked for one
// by one with GetProduct.
func (c CatalogChecker) UnknownProducts(ctx context.Context, ids []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	ids = uniq(ids)
	_, err := c.Client.BatchGetProducts(ctx, &catalogv1.BatchGetProductsRequest{Ids: ids})
	if err == nil {
		return nil, nil
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.NotFound {
		return nil, err
	}
	if named := namedInDetails(st, ids); len(named) > 0 {
		return named, nil
	}
	var unknown []string
	for _, id := range ids {
		_, err := c.Client.GetProduct(ctx, &catalogv1.GetProductRequest{Id: id})
		switch status.Code(err) {
		case codes.OK:
		case codes.NotFound:
			unknown = append(unknown, id)
		default:
			return nil, err
		}
	}
	return unknown, nil
}

// namedInDetails returns the ids, among asked, that a NOT_FOUND status names in its details.
func namedInDetails(st *status.Status, asked []string) []string {
	named := map[string]bool{}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			for k, v := range d.GetMetadata() {
				if k == "product_id" || k == "product_ids" || k == "ids" {
					for _, id := range strings.Split(v, ",") {
						named[strings.TrimSpace(id)] = true
					}
				}
			}
		case *errdetails.ResourceInfo:
			named[d.GetResourceName()] = true
		}
	}
	var out []string
	for _, id := range asked {
		if named[id] {
			out = append(out, id)
		}
	}
	return out
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
