package audit

import (
	"context"
	"errors"
	"fmt"
)

// Keys gives the audit MAC keys of a tenant; they never reach the database.
//
// Versions start at 1 (a record without a key version was chained by plain SHA-256), and
// a key is at least MinKeySize bytes. Whoever can only read or write the database, its
// owner included, holds no key, so it can append records but not forge their MACs.
type Keys interface {
	// Current is the key new records of tenant are chained under, and its version.
	Current(ctx context.Context, tenant string) (version int, key []byte, err error)
	// Version is the key of one version, for verifying records chained under it. For a
	// version the tenant never had, the error wraps ErrUnknownKeyVersion.
	Version(ctx context.Context, tenant string, version int) ([]byte, error)
}

// MinKeySize is the shortest audit key accepted: HMAC-SHA-256 is as strong as its key up
// to the hash's size.
const MinKeySize = 32

// ErrUnknownKeyVersion is what Keys.Version wraps for a version the tenant never had.
// Verification reports a record naming such a version as a broken link: only a change
// made outside the server writes one.
var ErrUnknownKeyVersion = errors.New("unknown audit key version")

// ErrNoKeys means a tenant's trail is keyed and no Keys were given to chain or verify it.
// Chaining refuses to go on without a key after a keyed record, so a server started
// without its keys cannot weaken the trail.
var ErrNoKeys = errors.New("the audit trail is keyed and no audit keys are configured")

// ErrBadKey means Keys gave a key the chain cannot use: a version below 1, or a key shorter
// than MinKeySize.
var ErrBadKey = errors.New("unusable audit key")

// currentKey returns the key new records of tenant are chained under: none (nil, 0) when
// keys is nil.
func currentKey(ctx context.Context, keys Keys, tenant string) ([]byte, int, error) {
	if keys == nil {
		return nil, 0, nil
	}
	version, key, err := keys.Current(ctx, tenant)
	if err != nil {
		return nil, 0, fmt.Errorf("current audit key: %w", err)
	}
	if err := usable(version, key); err != nil {
		return nil, 0, fmt.Errorf("current audit key: %w", err)
	}
	return key, version, nil
}

func usable(version int, key []byte) error {
	if version < 1 || len(key) < MinKeySize {
		return fmt.Errorf("%w: version %d of %d bytes (versions start at 1, keys have at least %d bytes)",
			ErrBadKey, version, len(key), MinKeySize)
	}
	return nil
}

// keyRing caches the keys of one tenant's versions for one walk of its trail.
type keyRing struct {
	keys   Keys
	tenant string
	byVer  map[int][]byte
}

// version returns the key of version v, asking Keys once per version.
func (r *keyRing) version(ctx context.Context, v int) ([]byte, error) {
	if k, ok := r.byVer[v]; ok {
		return k, nil
	}
	if r.keys == nil {
		return nil, ErrNoKeys
	}
	k, err := r.keys.Version(ctx, r.tenant, v)
	if err != nil {
		return nil, err
	}
	if err := usable(v, k); err != nil {
		return nil, err
	}
	if r.byVer == nil {
		r.byVer = map[int][]byte{}
	}
	r.byVer[v] = k
	return k, nil
}
