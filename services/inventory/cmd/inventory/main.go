// Command inventory runs the InventoryService: stock levels and reservations, shared by every
// replica through one SQLite file in MESH_DATA_DIR.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	mesh "polymesh.local/mesh/runtime-go"

	catalogv1 "polymesh.local/gen/go/shop/catalog/v1"
	inventoryv1 "polymesh.local/gen/go/shop/inventory/v1"
	inventory "polymesh.local/services/inventory"
	"polymesh.local/services/inventory/internal/server"
	"polymesh.local/services/inventory/internal/store"
)

// catalogService is the mesh name of the product catalog (its port comes from MESH_SERVICE_PORTS).
const catalogService = "catalog"

func main() {
	mesh.Main(mesh.Service{Name: "inventory", Setup: setup})
}

func setup(ctx context.Context, env *mesh.Env, reg grpc.ServiceRegistrar) (func() error, error) {
	seed, err := store.ParseSeed(inventory.Seed)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(env.Config.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	dbPath := filepath.Join(env.Config.DataDir, "inventory.db")
	st, err := store.Open(ctx, dbPath, seed)
	if err != nil {
		return nil, err
	}
	conn, err := env.Dial(catalogService)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("catalog client: %w", err)
	}
	env.Log.Info("store open", "path", dbPath)
	checker := server.CatalogChecker{Client: catalogv1.NewCatalogServiceClient(conn)}
	inventoryv1.RegisterInventoryServiceServer(reg, server.New(st, checker))
	return func() error {
		conn.Close()
		return st.Close()
	}, nil
}
