// Package auth owns who a request is: it verifies the JWT a request carries (bearer header
// or session cookie), turns its claims into a Principal with a tenant and a role, refuses
// cookie-authenticated writes from foreign origins, and mints HS256 tokens for automation.
// It knows nothing about routes; the API layer decides which role an operation needs.
package auth

import (
	"errors"
	"fmt"
	"regexp"
)

// Role is what a principal may do inside its tenant. Viewer, Editor and Admin are
// ordered: a higher role includes everything a lower one may do. Runtime stands outside
// the order: it may read the tenant's credentials file and nothing else.
type Role int

// The roles, lowest first. RoleNone is the zero value so that a Principal nobody filled
// in is allowed nothing.
const (
	RoleNone Role = iota
	Viewer
	Editor
	Admin
)

// Runtime is the role of a LOOPZE runtime that syncs its tenant's encrypted
// credentials.json: it allows only operations that ask for Runtime, which Admin allows too.
// Its value lies outside the ordered range so no comparison can promote it.
const Runtime Role = 16

// ErrUnknownRole is returned by ParseRole for anything but the three role names.
var ErrUnknownRole = errors.New("unknown role")

var roleNames = map[string]Role{"viewer": Viewer, "editor": Editor, "admin": Admin, "runtime": Runtime}

// ParseRole parses a role name as it appears in the `role` claim: "viewer", "editor",
// "admin" or "runtime", exactly. Matching is exact because the claim is machine-written and a lenient
// parser would accept tokens other verifiers of the same issuer refuse.
func ParseRole(s string) (Role, error) {
	r, ok := roleNames[s]
	if !ok {
		// The value is attacker-controlled when it comes from a token, so it is not echoed.
		return RoleNone, ErrUnknownRole
	}
	return r, nil
}

// String returns the claim spelling of the role.
func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case Viewer:
		return "viewer"
	case Editor:
		return "editor"
	case Admin:
		return "admin"
	case Runtime:
		return "runtime"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Allows reports whether a principal holding r may do what needs at least min.
// RoleNone and out-of-range values allow nothing, whatever min is. An operation that
// needs Runtime is allowed to Runtime and Admin; Runtime allows nothing else.
func (r Role) Allows(min Role) bool {
	if min == Runtime {
		return r == Runtime || r == Admin
	}
	return r.valid() && r >= min
}

func (r Role) valid() bool { return r >= Viewer && r <= Admin }

// tenantPattern is the slug rule shared by tenant names and entry IDs.
var tenantPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidTenant reports whether s is a valid tenant slug (^[a-z0-9][a-z0-9_-]{0,63}$).
// Tenants become directory names (data/tenants/<tenant>), so the rule also keeps path
// separators and dot segments out.
func ValidTenant(s string) bool { return tenantPattern.MatchString(s) }

// known reports whether r is a role a token may carry: an ordered one or Runtime.
func (r Role) known() bool { return r.valid() || r == Runtime }
