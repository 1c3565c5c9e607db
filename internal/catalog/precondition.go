package catalog

import (
	"fmt"
	"slices"

	"github.com/loopze/certstore/internal/repo"
)

// Precondition is what a write requires of the entry's current state, as the conditional
// headers of RFC 9110 section 13.1 state it. The zero value requires nothing. A write whose
// precondition does not hold changes nothing and fails with repo.ErrVersionMismatch, which
// the API answers with 412.
type Precondition struct {
	// Version, when non-zero, must be the entry's current version (If-Match with a tag). A
	// missing entry has no version, so it never matches.
	Version int64
	// Exists requires that the entry exists, in any version (If-Match: *).
	Exists bool
	// Absent requires that the entry does not exist (If-None-Match: *): a create only.
	Absent bool
	// NotVersions lists versions the entry must not be at (If-None-Match with tags).
	NotVersions []int64
}

// check judges the precondition against cur, the entry as the write's transaction locked
// it (nil when there is none). what names the write in the error.
func (p Precondition) check(cur *repo.Entry, what string) error {
	switch {
	case cur == nil && (p.Version != 0 || p.Exists):
		return fmt.Errorf("%s: the entry does not exist: %w", what, repo.ErrVersionMismatch)
	case cur == nil:
		return nil
	case p.Absent:
		return fmt.Errorf("%s: the entry exists: %w", what, repo.ErrVersionMismatch)
	case p.Version != 0 && cur.Version != p.Version,
		slices.Contains(p.NotVersions, cur.Version):
		return fmt.Errorf("%s: %w", what, repo.ErrVersionMismatch)
	}
	return nil
}
