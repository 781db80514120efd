// Package store keeps stock levels and reservations in SQLite. Several processes may open the same
// file at once (two inventory replicas do): the database runs in WAL mode with a busy timeout, and
// every mutation is one BEGIN IMMEDIATE transaction committed with synchronous=FULL, so it is
// durable before the call returns and writers never interleave.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sync"
	"time"

	"modernc.org/sqlite" // pure-Go driver "sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Status is where a reservation is in its life.
type Status int

// Stored values; do not renumber.
const (
	StatusHeld      Status = 1
	StatusReleased  Status = 2
	StatusCommitted Status = 3
)

func (s Status) String() string {
	switch s {
	case StatusHeld:
		return "HELD"
	case StatusReleased:
		return "RELEASED"
	case StatusCommitted:
		return "COMMITTED"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Item is a product and a number of units.
type Item struct {
	ProductID string
	Quantity  int64
}

// Reservation is stock held for one order. A release-before-reserve tombstone is RELEASED with no
// items.
type Reservation struct {
	ID     string
	Items  []Item
	Status Status
}

// Domain errors. The server maps each to a gRPC status.
var (
	ErrReservationMismatch = errors.New("reservation exists with different items")
	ErrAlreadyCommitted    = errors.New("reservation already committed")
	ErrReservationReleased = errors.New("reservation released")
	ErrReservationNotFound = errors.New("reservation not found")
)

// OutOfStockError says which product was short; nothing was held.
type OutOfStockError struct {
	ProductID string
	Requested int64
	Available int64
}

func (e *OutOfStockError) Error() string {
	return fmt.Sprintf("out of stock: %s: requested %d, available %d", e.ProductID, e.Requested, e.Available)
}

// Timeouts and pool size.
const (
	busyTimeoutMillis = 10_000 // how long a writer waits for another process's transaction
	maxOpenConns      = 4
)

const schema = `
CREATE TABLE IF NOT EXISTS stock (
	product_id TEXT PRIMARY KEY,
	available  INTEGER NOT NULL CHECK (available >= 0)
) STRICT;
CREATE TABLE IF NOT EXISTS reservations (
	id     TEXT PRIMARY KEY,
	status INTEGER NOT NULL CHECK (status IN (1, 2, 3))
) STRICT;
CREATE TABLE IF NOT EXISTS reservation_items (
	reservation_id TEXT NOT NULL REFERENCES reservations (id),
	position       INTEGER NOT NULL,
	product_id     TEXT NOT NULL,
	quantity       INTEGER NOT NULL CHECK (quantity >= 1),
	PRIMARY KEY (reservation_id, position)
) STRICT;
`

// Store is one handle on the database file; safe for concurrent use.
type Store struct {
	db *sql.DB
	// writeMu queues this process's writers in Go, so that SQLite's busy handler only ever waits
	// for the other process.
	writeMu sync.Mutex
}

// Open opens (creating if needed) the database at path, creates the schema and adds seed stock
// for products it does not have yet; live stock is never overwritten.
func Open(ctx context.Context, path string, seed map[string]int64) (*Store, error) {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeoutMillis))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate") // every BeginTx is BEGIN IMMEDIATE
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(maxOpenConns)
	s := &Store{db: db}
	// Two replicas that open a new file at once (make up starts both inventories together): while
	// one turns it to WAL, SQLite answers the other's first BEGIN with SQLITE_BUSY at once, busy
	// timeout or not (measured: 1 open in ~30). So the first transaction is tried again, as long as
	// the busy timeout would have waited.
	deadline := time.Now().Add(busyTimeoutMillis * time.Millisecond)
	for err = s.createSchema(ctx, seed); isBusy(err) && time.Now().Before(deadline); err = s.createSchema(ctx, seed) {
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// createSchema creates the tables and adds the seed stock the database does not have yet.
func (s *Store) createSchema(ctx context.Context, seed map[string]int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
		for _, id := range slices.Sorted(maps.Keys(seed)) {
			if _, err := tx.ExecContext(ctx,
				`INSERT OR IGNORE INTO stock (product_id, available) VALUES (?, ?)`, id, seed[id]); err != nil {
				return fmt.Errorf("seed %s: %w", id, err)
			}
		}
		return nil
	})
}

// ParseSeed reads seed.json: {"stock": [{"productId": "...", "available": N}, ...]}.
func ParseSeed(data []byte) (map[string]int64, error) {
	var doc struct {
		Stock []struct {
			ProductID string `json:"productId"`
			Available int64  `json:"available"`
		} `json:"stock"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	seed := make(map[string]int64, len(doc.Stock))
	for i, e := range doc.Stock {
		if e.ProductID == "" || e.Available < 0 {
			return nil, fmt.Errorf("seed: stock[%d]: needs a productId and available >= 0", i)
		}
		seed[e.ProductID] = e.Available
	}
	return seed, nil
}

// Close closes the handle.
func (s *Store) Close() error { return s.db.Close() }

// write runs fn in one BEGIN IMMEDIATE transaction and commits it unless fn fails.
func (s *Store) write(ctx context.Context, fn func(*sql.Tx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Available returns the units of productID that can be reserved; found is false when the product
// has no stock row.
func (s *Store) Available(ctx context.Context, productID string) (available int64, found bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT available FROM stock WHERE product_id = ?`, productID).Scan(&available)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return available, true, nil
}

// Reservation returns a reservation, or ErrReservationNotFound.
func (s *Store) Reservation(ctx context.Context, id string) (Reservation, error) {
	r, found, err := loadReservation(ctx, s.db, id)
	if err != nil {
		return Reservation{}, err
	}
	if !found {
		return Reservation{}, ErrReservationNotFound
	}
	return r, nil
}

// Reserve holds every item or none. An existing reservation with the same items is returned as it
// is and holds nothing more; with other items it is ErrReservationMismatch. A released reservation
// (also a release-before-reserve tombstone) is returned as it is. Short stock is *OutOfStockError.
func (s *Store) Reserve(ctx context.Context, id string, items []Item) (Reservation, error) {
	var out Reservation
	err := s.write(ctx, func(tx *sql.Tx) error {
		existing, found, err := loadReservation(ctx, tx, id)
		if err != nil {
			return err
		}
		if found {
			tombstone := existing.Status == StatusReleased && len(existing.Items) == 0
			if !tombstone && !sameItems(existing.Items, items) {
				return ErrReservationMismatch
			}
			out = existing
			return nil
		}
		wanted := totals(items)
		for _, p := range wanted {
			var available int64
			err := tx.QueryRowContext(ctx, `SELECT available FROM stock WHERE product_id = ?`, p.ProductID).Scan(&available)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if available < p.Quantity {
				return &OutOfStockError{ProductID: p.ProductID, Requested: p.Quantity, Available: available}
			}
		}
		for _, p := range wanted {
			if _, err := tx.ExecContext(ctx,
				`UPDATE stock SET available = available - ? WHERE product_id = ?`, p.Quantity, p.ProductID); err != nil {
				return err
			}
		}
		if err := insertReservation(ctx, tx, id, StatusHeld, items); err != nil {
			return err
		}
		out = Reservation{ID: id, Items: slices.Clone(items), Status: StatusHeld}
		return nil
	})
	return out, err
}

// Release gives a held reservation's stock back. Releasing again returns the same answer; a
// committed one is ErrAlreadyCommitted; an unknown id is recorded as a RELEASED tombstone with no
// items, so that a late Reserve with that id holds nothing.
func (s *Store) Release(ctx context.Context, id string) (Reservation, error) {
	var out Reservation
	err := s.write(ctx, func(tx *sql.Tx) error {
		r, found, err := loadReservation(ctx, tx, id)
		if err != nil {
			return err
		}
		switch {
		case !found:
			out = Reservation{ID: id, Status: StatusReleased}
			return insertReservation(ctx, tx, id, StatusReleased, nil)
		case r.Status == StatusReleased:
			out = r
			return nil
		case r.Status == StatusCommitted:
			return ErrAlreadyCommitted
		}
		for _, p := range totals(r.Items) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO stock (product_id, available) VALUES (?, ?)
				ON CONFLICT (product_id) DO UPDATE SET available = available + excluded.available`,
				p.ProductID, p.Quantity); err != nil {
				return err
			}
		}
		if err := setStatus(ctx, tx, id, StatusReleased); err != nil {
			return err
		}
		r.Status = StatusReleased
		out = r
		return nil
	})
	return out, err
}

// Commit turns a held reservation into a sale; committing again returns the same answer. A
// released one is ErrReservationReleased, an unknown one ErrReservationNotFound.
func (s *Store) Commit(ctx context.Context, id string) (Reservation, error) {
	var out Reservation
	err := s.write(ctx, func(tx *sql.Tx) error {
		r, found, err := loadReservation(ctx, tx, id)
		if err != nil {
			return err
		}
		switch {
		case !found:
			return ErrReservationNotFound
		case r.Status == StatusReleased:
			return ErrReservationReleased
		case r.Status == StatusCommitted:
			out = r
			return nil
		}
		if err := setStatus(ctx, tx, id, StatusCommitted); err != nil {
			return err
		}
		r.Status = StatusCommitted
		out = r
		return nil
	})
	return out, err
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func loadReservation(ctx context.Context, q querier, id string) (Reservation, bool, error) {
	r := Reservation{ID: id}
	err := q.QueryRowContext(ctx, `SELECT status FROM reservations WHERE id = ?`, id).Scan(&r.Status)
	if errors.Is(err, sql.ErrNoRows) {
		return Reservation{}, false, nil
	}
	if err != nil {
		return Reservation{}, false, err
	}
	rows, err := q.QueryContext(ctx,
		`SELECT product_id, quantity FROM reservation_items WHERE reservation_id = ? ORDER BY position`, id)
	if err != nil {
		return Reservation{}, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var it Item
		if err := rows.Scan(&it.ProductID, &it.Quantity); err != nil {
			return Reservation{}, false, err
		}
		r.Items = append(r.Items, it)
	}
	return r, true, rows.Err()
}

func insertReservation(ctx context.Context, tx *sql.Tx, id string, st Status, items []Item) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO reservations (id, status) VALUES (?, ?)`, id, st); err != nil {
		return err
	}
	for i, it := range items {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO reservation_items (reservation_id, position, product_id, quantity) VALUES (?, ?, ?, ?)`,
			id, i, it.ProductID, it.Quantity); err != nil {
			return err
		}
	}
	return nil
}

func setStatus(ctx context.Context, tx *sql.Tx, id string, st Status) error {
	_, err := tx.ExecContext(ctx, `UPDATE reservations SET status = ? WHERE id = ?`, st, id)
	return err
}

// totals adds up the units per product, in the order products first appear.
func totals(items []Item) []Item {
	var out []Item
	index := map[string]int{}
	for _, it := range items {
		if i, ok := index[it.ProductID]; ok {
			out[i].Quantity += it.Quantity
			continue
		}
		index[it.ProductID] = len(out)
		out = append(out, it)
	}
	return out
}

// sameItems compares the units per product, so a retry that lists the items in another order is
// the same request.
func sameItems(a, b []Item) bool {
	ta, tb := totals(a), totals(b)
	if len(ta) != len(tb) {
		return false
	}
	byProduct := map[string]int64{}
	for _, it := range ta {
		byProduct[it.ProductID] = it.Quantity
	}
	for _, it := range tb {
		if q, ok := byProduct[it.ProductID]; !ok || q != it.Quantity {
			return false
		}
	}
	return true
}
