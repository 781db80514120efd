package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	inventory "polymesh.local/services/inventory"
)

func openTemp(t *testing.T, seed map[string]int64) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "inventory.db")
	s, err := Open(context.Background(), path, seed)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func available(t *testing.T, s *Store, id string) int64 {
	t.Helper()
	n, _, err := s.Available(context.Background(), id)
	if err != nil {
		t.Fatalf("Available(%s): %v", id, err)
	}
	return n
}

func TestParseEmbeddedSeed(t *testing.T) {
	seed, err := ParseSeed(inventory.Seed)
	if err != nil {
		t.Fatal(err)
	}
	if seed["sku-grinder"] != 8 || len(seed) != 12 {
		t.Fatalf("seed = %v", seed)
	}
	if _, err := ParseSeed([]byte(`{"stock":[{"productId":"","available":1}]}`)); err == nil {
		t.Fatal("empty productId accepted")
	}
}

func TestSeedNeverOverwritesLiveStock(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t, map[string]int64{"a": 5})
	if _, err := s.Reserve(ctx, "r1", []Item{{"a", 2}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(ctx, path, map[string]int64{"a": 5, "b": 7})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := available(t, s2, "a"); got != 3 {
		t.Fatalf("a after reopen = %d, want 3 (seed must not overwrite)", got)
	}
	if got := available(t, s2, "b"); got != 7 {
		t.Fatalf("b = %d, want 7 (new seed product added)", got)
	}
}

func TestReserveIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, map[string]int64{"a": 10, "b": 10})
	items := []Item{{"a", 2}, {"b", 3}}
	r1, err := s.Reserve(ctx, "r1", items)
	if err != nil {
		t.Fatal(err)
	}
	want := Reservation{ID: "r1", Items: items, Status: StatusHeld}
	if !reflect.DeepEqual(r1, want) {
		t.Fatalf("first = %+v, want %+v", r1, want)
	}
	// Same items in another order: the same request.
	r2, err := s.Reserve(ctx, "r1", []Item{{"b", 3}, {"a", 2}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r2, want) {
		t.Fatalf("retry = %+v, want the stored %+v", r2, want)
	}
	if a, b := available(t, s, "a"), available(t, s, "b"); a != 8 || b != 7 {
		t.Fatalf("available a=%d b=%d, want 8 7 (held once)", a, b)
	}
	if _, err := s.Reserve(ctx, "r1", []Item{{"a", 3}}); !errors.Is(err, ErrReservationMismatch) {
		t.Fatalf("different items: err = %v, want ErrReservationMismatch", err)
	}
	if a := available(t, s, "a"); a != 8 {
		t.Fatalf("mismatch changed stock: a=%d", a)
	}
}

func TestReserveAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, map[string]int64{"a": 10, "b": 2})
	_, err := s.Reserve(ctx, "r1", []Item{{"a", 5}, {"b", 3}})
	var oos *OutOfStockError
	if !errors.As(err, &oos) {
		t.Fatalf("err = %v, want OutOfStockError", err)
	}
	if *oos != (OutOfStockError{ProductID: "b", Requested: 3, Available: 2}) {
		t.Fatalf("oos = %+v", *oos)
	}
	if a := available(t, s, "a"); a != 10 {
		t.Fatalf("a = %d after a failed reservation, want 10", a)
	}
	if _, err := s.Reservation(ctx, "r1"); !errors.Is(err, ErrReservationNotFound) {
		t.Fatalf("failed reservation was stored: %v", err)
	}
	// Duplicated product lines count together.
	_, err = s.Reserve(ctx, "r2", []Item{{"b", 1}, {"b", 2}})
	if !errors.As(err, &oos) || oos.Requested != 3 || oos.Available != 2 {
		t.Fatalf("duplicate lines: err = %v", err)
	}
	// A product without a stock row has nothing available.
	_, err = s.Reserve(ctx, "r3", []Item{{"zzz", 1}})
	if !errors.As(err, &oos) || oos.ProductID != "zzz" || oos.Available != 0 {
		t.Fatalf("no stock row: err = %v", err)
	}
	// Exactly the available units can be taken.
	if _, err := s.Reserve(ctx, "r4", []Item{{"b", 2}}); err != nil {
		t.Fatal(err)
	}
	if b := available(t, s, "b"); b != 0 {
		t.Fatalf("b = %d, want 0", b)
	}
}

func TestReleaseReturnsStockOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, map[string]int64{"a": 10})
	if _, err := s.Reserve(ctx, "r1", []Item{{"a", 4}}); err != nil {
		t.Fatal(err)
	}
	want := Reservation{ID: "r1", Items: []Item{{"a", 4}}, Status: StatusReleased}
	for i := range 2 {
		r, err := s.Release(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("release %d = %+v, want %+v", i, r, want)
		}
		if a := available(t, s, "a"); a != 10 {
			t.Fatalf("after release %d a = %d, want 10", i, a)
		}
	}
	// A reserve retried after the release holds nothing.
	r, err := s.Reserve(ctx, "r1", []Item{{"a", 4}})
	if err != nil || r.Status != StatusReleased {
		t.Fatalf("reserve after release = %+v, %v", r, err)
	}
	if a := available(t, s, "a"); a != 10 {
		t.Fatalf("a = %d, want 10", a)
	}
	if _, err := s.Commit(ctx, "r1"); !errors.Is(err, ErrReservationReleased) {
		t.Fatalf("commit released: %v", err)
	}
}

func TestReleaseBeforeReserveLeavesTombstone(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, map[string]int64{"a": 10})
	r, err := s.Release(ctx, "late")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Reservation{ID: "late", Status: StatusReleased}); !reflect.DeepEqual(r, want) {
		t.Fatalf("tombstone = %+v", r)
	}
	r, err = s.Reserve(ctx, "late", []Item{{"a", 3}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != StatusReleased || len(r.Items) != 0 {
		t.Fatalf("late reserve = %+v, want the released tombstone", r)
	}
	if a := available(t, s, "a"); a != 10 {
		t.Fatalf("late reserve held stock: a = %d", a)
	}
	if _, err := s.Commit(ctx, "late"); !errors.Is(err, ErrReservationReleased) {
		t.Fatalf("commit tombstone: %v", err)
	}
}

func TestCommit(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, map[string]int64{"a": 10})
	if _, err := s.Commit(ctx, "nope"); !errors.Is(err, ErrReservationNotFound) {
		t.Fatalf("commit unknown: %v", err)
	}
	if _, err := s.Reservation(ctx, "nope"); !errors.Is(err, ErrReservationNotFound) {
		t.Fatalf("commit of an unknown id stored something: %v", err)
	}
	if _, err := s.Reserve(ctx, "r1", []Item{{"a", 4}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r, err := s.Commit(ctx, "r1")
		if err != nil || r.Status != StatusCommitted || !reflect.DeepEqual(r.Items, []Item{{"a", 4}}) {
			t.Fatalf("commit = %+v, %v", r, err)
		}
	}
	if _, err := s.Release(ctx, "r1"); !errors.Is(err, ErrAlreadyCommitted) {
		t.Fatalf("release committed: %v", err)
	}
	if a := available(t, s, "a"); a != 6 {
		t.Fatalf("a = %d, want 6 (sold units stay gone)", a)
	}
}

// Two handles on one file stand for the two replicas. Many concurrent reservations of one unit
// each compete for the last units: exactly `stock` of them may succeed.
func TestTwoHandlesConserveStock(t *testing.T) {
	const stock, perHandle = 7, 20
	ctx := context.Background()
	s1, path := openTemp(t, map[string]int64{"last": stock})
	s2, err := Open(ctx, path, map[string]int64{"last": 1000}) // seed must not overwrite
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()

	var wg sync.WaitGroup
	var mu sync.Mutex
	held, short := 0, 0
	var unexpected []error
	for h, s := range []*Store{s1, s2} {
		for i := range perHandle {
			wg.Go(func() {
				id := fmt.Sprintf("r-%d-%d", h, i)
				_, err := s.Reserve(ctx, id, []Item{{"last", 1}})
				// Every request is sent twice, as a retrying client would.
				_, err2 := s.Reserve(ctx, id, []Item{{"last", 1}})
				mu.Lock()
				defer mu.Unlock()
				var oos *OutOfStockError
				switch {
				case err == nil && err2 == nil:
					held++
				case errors.As(err, &oos):
					short++
				default:
					unexpected = append(unexpected, errors.Join(err, err2))
				}
			})
		}
	}
	wg.Wait()
	if len(unexpected) > 0 {
		t.Fatalf("unexpected errors: %v", unexpected)
	}
	if held != stock || short != 2*perHandle-stock {
		t.Fatalf("held %d, short %d; want %d and %d", held, short, stock, 2*perHandle-stock)
	}
	for _, s := range []*Store{s1, s2} {
		if a := available(t, s, "last"); a != 0 {
			t.Fatalf("available = %d, want 0", a)
		}
	}
	var units int64
	if err := s1.db.QueryRow(`SELECT COALESCE(SUM(quantity), 0) FROM reservation_items`).Scan(&units); err != nil {
		t.Fatal(err)
	}
	if units != stock {
		t.Fatalf("units held in reservations = %d, want %d", units, stock)
	}
}

// Reserve and release racing on two handles keep held + available equal to the stock.
func TestTwoHandlesReserveReleaseRace(t *testing.T) {
	const stock = 5
	ctx := context.Background()
	s1, path := openTemp(t, map[string]int64{"a": stock})
	s2, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	var wg sync.WaitGroup
	for i := range 30 {
		id := fmt.Sprintf("r%d", i)
		wg.Go(func() { _, _ = s1.Reserve(ctx, id, []Item{{"a", 1}}) })
		wg.Go(func() { _, _ = s2.Release(ctx, id) })
	}
	wg.Wait()
	var heldUnits int64
	err = s1.db.QueryRow(`SELECT COALESCE(SUM(i.quantity), 0) FROM reservation_items i
		JOIN reservations r ON r.id = i.reservation_id WHERE r.status = 1`).Scan(&heldUnits)
	if err != nil {
		t.Fatal(err)
	}
	if a := available(t, s2, "a"); a+heldUnits != stock {
		t.Fatalf("available %d + held %d != %d", a, heldUnits, stock)
	}
}

func TestConnectionSettings(t *testing.T) {
	s, _ := openTemp(t, nil)
	var mode string
	var busy, sync int
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || busy != busyTimeoutMillis || sync != 2 {
		t.Fatalf("journal_mode=%s busy_timeout=%d synchronous=%d; want wal %d 2 (FULL)", mode, busy, sync, busyTimeoutMillis)
	}
}
