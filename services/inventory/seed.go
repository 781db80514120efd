// Package inventory holds files embedded in the inventory binary.
package inventory

import _ "embed"

// Seed is the initial stock (seed.json), added for products the database does not have yet.
//
//go:embed seed.json
var Seed []byte
