package store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
)

// Two replicas start at once on a new database file (make up starts inventory-1 and inventory-2
// together): both must open it. Measured before the fix: the second got "begin: database is
// locked (SQLITE_BUSY)" at once, busy timeout or not, and exited.
func TestTwoStoresOpeningANewFileAtOnceBothOpen(t *testing.T) {
	seed := map[string]int64{"sku-a": 5, "sku-b": 7}
	for round := range 30 {
		path := filepath.Join(t.TempDir(), "inventory.db")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := Open(context.Background(), path, seed)
				if err == nil {
					err = s.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, store %d: %v", round, i, err)
			}
		}
	}
}
