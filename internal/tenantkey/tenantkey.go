// Package tenantkey owns the keys of tenants. Each tenant has versioned keys of its own,
// 32 random bytes each, stored in PostgreSQL only wrapped under the master key
// (internal/masterkey), opened in memory and never written in clear. From a tenant key,
// HKDF-SHA-256 derives what it is used for:
//
//   - the seal key, which wraps the data keys of the tenant's sealed values (entries, their
//     history, node secrets): the tenant's envelope.Ring, whose keys open nothing of
//     another tenant;
//   - the file key, which seals the tenant's credentials.json, and is what a runtime key
//     file holds: it opens that tenant's file and nothing else;
//   - the audit key, the HMAC key of the tenant's audit chain, which the database never
//     holds.
//
// The current version seals; older versions stay for opening and verifying. A master key
// rotation rewraps the stored tenant keys only (one row per tenant and version), so it
// costs O(tenants), not O(rows). docs/keys.md describes the hierarchy.
package tenantkey

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// KeySize is the size of a tenant key and of every key derived from it.
const KeySize = sealing.TenantKeySize

// Sentinel errors callers branch on.
var (
	// ErrNoKey means a version of a tenant's key that does not exist.
	ErrNoKey = errors.New("no such tenant key")
	// ErrNoMasterKey means a tenant key is wrapped under a master key this server does
	// not hold: it was given the wrong master key, or missed a rotation.
	ErrNoMasterKey = errors.New("the master key that wraps a tenant key is not held")
)

// loadTimeout bounds a reload of a tenant's keys from a ring's Reload, which has no context.
const loadTimeout = 10 * time.Second

// Keys holds the tenant keys a server uses, opened on first use and kept in memory. It is
// safe for concurrent use.
type Keys struct {
	// Pool reaches the database, where tenant keys are stored wrapped.
	Pool *pgxpool.Pool
	// Master wraps and unwraps tenant keys.
	Master masterkey.Keyring
	// Legacy holds the master key files values were sealed under before tenant keys
	// existed: every tenant's ring opens with them, and nothing is sealed under them.
	// Nil when there are none (an installation that began with tenant keys, or whose
	// master key is in a token).
	Legacy *envelope.Ring
	// Logger receives the creation of keys.
	Logger *slog.Logger
	// ReadOnly makes no key: a tenant without one is ErrNoKey, and its ring holds the
	// Legacy keys alone (doctor, which changes nothing, reads an upgraded install so).
	ReadOnly bool

	mu      sync.Mutex
	tenants map[string]*tenant
}

// tenant is what Keys holds of one tenant: its versions, opened, and its sealing ring.
type tenant struct {
	mu       sync.Mutex
	versions []*Version // by version, oldest first
	ring     *envelope.Ring
}

// Version is one version of a tenant's key, opened: what it derives, and how it is stored.
type Version struct {
	Tenant string
	N      int
	// MasterKeyID and Wrapped are the version as stored: wrapped under that master key.
	MasterKeyID string
	Wrapped     []byte
	root        secret.Bytes
}

// derive is the key version v derives for purpose.
func (v *Version) derive(purpose string) (secret.Bytes, error) {
	return sealing.DeriveTenantKey(v.root, purpose, v.Tenant, v.N)
}

// FileKey is the key that seals the tenant's credentials.json under this version.
func (v *Version) FileKey() (secret.Bytes, error) { return v.derive(sealing.PurposeFile) }

// AuditKey is the HMAC key of the tenant's audit chain under this version.
func (v *Version) AuditKey() (secret.Bytes, error) { return v.derive(sealing.PurposeAudit) }

func (k *Keys) logger() *slog.Logger {
	if k.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return k.Logger
}

func (k *Keys) tenant(name string) *tenant {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tenants == nil {
		k.tenants = map[string]*tenant{}
	}
	t, ok := k.tenants[name]
	if !ok {
		t = &tenant{}
		k.tenants[name] = t
	}
	return t
}

// Forget drops what Keys holds of tenant (or of every tenant, for ""), so the next use
// reads the keys again: another process rotated them.
func (k *Keys) Forget(tenant string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if tenant == "" {
		k.tenants = nil
		return
	}
	delete(k.tenants, tenant)
}

// Versions returns the versions of tenant's key, oldest first, creating version 1 when the
// tenant has none yet (ErrNoKey instead when ReadOnly).
func (k *Keys) Versions(ctx context.Context, tenant string) ([]*Version, error) {
	t := k.tenant(tenant)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.versions) > 0 {
		return t.versions, nil
	}
	vs, err := k.load(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if len(vs) == 0 && k.ReadOnly {
		return nil, fmt.Errorf("tenant %s has no key yet: %w", tenant, ErrNoKey)
	}
	if len(vs) == 0 {
		if _, err := k.add(ctx, tenant, 1); err != nil {
			return nil, err
		}
		if vs, err = k.load(ctx, tenant); err != nil {
			return nil, err
		}
	}
	t.versions = vs
	return vs, nil
}

// Current is the version of tenant's key that seals now.
func (k *Keys) Current(ctx context.Context, tenant string) (*Version, error) {
	vs, err := k.Versions(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return vs[len(vs)-1], nil
}

// Version is version n of tenant's key; ErrNoKey when there is none.
func (k *Keys) Version(ctx context.Context, tenant string, n int) (*Version, error) {
	vs, err := k.Versions(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		if v.N == n {
			return v, nil
		}
	}
	// Another process may have rotated since this one read the keys.
	k.Forget(tenant)
	if vs, err = k.Versions(ctx, tenant); err != nil {
		return nil, err
	}
	for _, v := range vs {
		if v.N == n {
			return v, nil
		}
	}
	return nil, fmt.Errorf("version %d of the key of %s: %w", n, tenant, ErrNoKey)
}

// Ring is tenant's sealing ring: the seal key of its current version seals, those of older
// versions and the legacy master keys open. A value sealed under a key the ring does not
// hold makes sealing.Open reload it, which reads the tenant's keys again.
func (k *Keys) Ring(ctx context.Context, tenant string) (*envelope.Ring, error) {
	t := k.tenant(tenant)
	t.mu.Lock()
	ring := t.ring
	t.mu.Unlock()
	if ring != nil {
		return ring, nil
	}
	first, err := k.Versions(ctx, tenant)
	if err != nil {
		if k.ReadOnly && k.Legacy != nil && errors.Is(err, ErrNoKey) {
			// Rows of a tenant not migrated yet are all under the legacy keys.
			return k.Legacy, nil
		}
		return nil, err
	}
	ring, err = envelope.NewLoadedRing(func() (current []byte, others [][]byte, err error) {
		// The ring is built from the versions just read; a reload reads them again (each
		// read unwraps every version under the master key, in a token a call of its own).
		vs := first
		first = nil
		if vs == nil {
			lctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
			defer cancel()
			if vs, err = k.load(lctx, tenant); err != nil {
				return nil, nil, err
			}
		}
		if len(vs) == 0 {
			return nil, nil, fmt.Errorf("tenant %s: %w", tenant, ErrNoKey)
		}
		seal := make([][]byte, len(vs))
		for i, v := range vs {
			if seal[i], err = v.derive(sealing.PurposeSeal); err != nil {
				return nil, nil, err
			}
		}
		return seal[len(seal)-1], seal[:len(seal)-1], nil
	}, k.Legacy)
	if err != nil {
		return nil, fmt.Errorf("the keys of %s: %w", tenant, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ring == nil {
		t.ring = ring
	}
	return t.ring, nil
}

// Rotate adds the next version of tenant's key, which seals from now on (in this process
// at once, in others once they Forget or meet a value sealed under it), and returns it.
func (k *Keys) Rotate(ctx context.Context, tenant string) (*Version, error) {
	vs, err := k.Versions(ctx, tenant)
	if err != nil {
		return nil, err
	}
	next := vs[len(vs)-1].N + 1
	if _, err := k.add(ctx, tenant, next); err != nil {
		return nil, err
	}
	k.Forget(tenant)
	return k.Version(ctx, tenant, next)
}

// add stores version n of tenant's key, made at random and wrapped under the current
// master key, unless another process stored it first; it reports whether this one did.
func (k *Keys) add(ctx context.Context, tenant string, n int) (bool, error) {
	root := make(secret.Bytes, KeySize)
	if _, err := rand.Read(root); err != nil {
		return false, fmt.Errorf("make a key for %s: %w", tenant, err)
	}
	defer clear(root)
	mk := k.Master.Current()
	wrapped, err := mk.Wrap(root, sealing.TenantKeyWrap(tenant, n))
	if err != nil {
		return false, fmt.Errorf("wrap the key of %s: %w", tenant, err)
	}
	added, err := repo.AddTenantKey(ctx, k.Pool, repo.TenantKey{TenantID: tenant, Version: n, MasterKeyID: mk.ID(), Wrapped: wrapped})
	if err != nil {
		return false, err
	}
	if added {
		k.logger().Info("tenant key made", "tenant", tenant, "version", n, "master_key_id", mk.ID())
	}
	return added, nil
}

// load reads and opens every version of tenant's key.
func (k *Keys) load(ctx context.Context, tenant string) ([]*Version, error) {
	rows, err := repo.TenantKeys(ctx, k.Pool, tenant)
	if err != nil {
		return nil, err
	}
	out := make([]*Version, 0, len(rows))
	for _, r := range rows {
		root, err := k.unwrap(tenant, r.Version, r.MasterKeyID, r.Wrapped)
		if err != nil {
			return nil, err
		}
		out = append(out, &Version{Tenant: tenant, N: r.Version, MasterKeyID: r.MasterKeyID, Wrapped: r.Wrapped, root: root})
	}
	return out, nil
}

// unwrap opens a stored tenant key under the master key that wrapped it, reloading the
// master keyring once when it does not hold that key (another process rotated it).
func (k *Keys) unwrap(tenant string, n int, masterID string, wrapped []byte) (secret.Bytes, error) {
	aad := sealing.TenantKeyWrap(tenant, n)
	var (
		root []byte
		err  error
	)
	mk, ok := k.Master.Get(masterID)
	if !ok {
		if err := k.Master.Reload(); err != nil {
			return nil, fmt.Errorf("the key of %s version %d: reload master keys: %w", tenant, n, err)
		}
		mk, ok = k.Master.Get(masterID)
	}
	switch {
	case ok:
		root, err = mk.Unwrap(wrapped, aad)
	case k.Legacy != nil && k.Legacy.Has(masterID):
		// A master key moving into a token or a credential: the key file it leaves in the
		// data directory opens the tenant keys it wrapped, until rotate-key rewraps them
		// under the new store's key.
		root, err = k.Legacy.UnwrapKey(masterID, wrapped, aad)
	default:
		return nil, fmt.Errorf("the key of %s version %d is wrapped under master key %s, which this server does not hold: %w",
			tenant, n, masterID, ErrNoMasterKey)
	}
	if err != nil {
		return nil, fmt.Errorf("the key of %s version %d: %w", tenant, n, err)
	}
	if len(root) != KeySize {
		clear(root)
		return nil, fmt.Errorf("the key of %s version %d is %d bytes, want %d", tenant, n, len(root), KeySize)
	}
	return secret.Bytes(root), nil
}

// Rewrap moves every stored version of tenant's key that is not wrapped under the current
// master key to it, through q (the caller's transaction, so the move and its audit record
// commit together); it returns how many it moved. The keys themselves do not change, so
// nothing sealed under them does either.
func (k *Keys) Rewrap(ctx context.Context, q db.DBTX, tenant string) (int, error) {
	rows, err := repo.TenantKeys(ctx, q, tenant)
	if err != nil {
		return 0, err
	}
	cur := k.Master.Current()
	moved := 0
	for _, r := range rows {
		if r.MasterKeyID == cur.ID() {
			continue
		}
		root, err := k.unwrap(tenant, r.Version, r.MasterKeyID, r.Wrapped)
		if err != nil {
			return moved, err
		}
		wrapped, err := cur.Wrap(root, sealing.TenantKeyWrap(tenant, r.Version))
		clear(root)
		if err != nil {
			return moved, fmt.Errorf("rewrap the key of %s version %d: %w", tenant, r.Version, err)
		}
		done, err := repo.RewrapTenantKey(ctx, q, tenant, r.Version, r.MasterKeyID, cur.ID(), wrapped)
		if err != nil {
			return moved, err
		}
		if done {
			moved++
		}
	}
	if moved > 0 {
		k.Forget(tenant)
	}
	return moved, nil
}

// FileKey is what seals tenant's credentials.json now: the file key of its current version,
// and that version wrapped under the master key, which the file's header carries.
func (k *Keys) FileKey(ctx context.Context, tenant string) (credfile.FileKey, error) {
	v, err := k.Current(ctx, tenant)
	if err != nil {
		return credfile.FileKey{}, err
	}
	fk, err := v.FileKey()
	if err != nil {
		return credfile.FileKey{}, err
	}
	return credfile.FileKey{Key: fk, TenantKey: credfile.TenantKeyRef{Version: v.N, MasterKeyID: v.MasterKeyID,
		Wrapped: base64.StdEncoding.EncodeToString(v.Wrapped)}}, nil
}

// Adopt makes the tenant key a credentials file's header carries tenant's key, when tenant
// has none yet and the key is wrapped under a master key this server holds: a tenant
// restored from its file keeps its key, so the runtime keys given out for it keep opening
// the files written after the restore. It reports whether it did.
func (k *Keys) Adopt(ctx context.Context, tenant string, ref credfile.TenantKeyRef) (bool, error) {
	rows, err := repo.TenantKeys(ctx, k.Pool, tenant)
	if err != nil || len(rows) > 0 {
		return false, err
	}
	if _, ok := k.Master.Get(ref.MasterKeyID); (!ok && (k.Legacy == nil || !k.Legacy.Has(ref.MasterKeyID))) || ref.Version < 1 {
		return false, nil
	}
	wrapped, err := base64.StdEncoding.DecodeString(ref.Wrapped)
	if err != nil {
		return false, fmt.Errorf("%w: the wrapped tenant key is not base64", credfile.ErrNotCredentialsFile)
	}
	root, err := k.unwrap(tenant, ref.Version, ref.MasterKeyID, wrapped)
	if err != nil {
		return false, err
	}
	clear(root)
	added, err := repo.AddTenantKey(ctx, k.Pool, repo.TenantKey{TenantID: tenant, Version: ref.Version,
		MasterKeyID: ref.MasterKeyID, Wrapped: wrapped})
	if err != nil {
		return false, err
	}
	k.Forget(tenant)
	if added {
		k.logger().Info("tenant key taken from its credentials file", "tenant", tenant, "version", ref.Version, "master_key_id", ref.MasterKeyID)
	}
	return added, nil
}

// Opener opens credentials files with the master keys: a version 2 file through the
// tenant key its header carries (unwrapped by the master keyring, in a token too), a
// version 1 file with the legacy master key files.
func (k *Keys) Opener() credfile.Keys {
	return credfile.Keys{Ring: k.Legacy, FileKey: func(h credfile.Header) (secret.Bytes, error) {
		ref := h.TenantKey
		wrapped, err := base64.StdEncoding.DecodeString(ref.Wrapped)
		if err != nil {
			return nil, fmt.Errorf("%w: the wrapped tenant key is not base64", credfile.ErrNotCredentialsFile)
		}
		if _, ok := k.Master.Get(ref.MasterKeyID); !ok {
			return nil, fmt.Errorf("the file's tenant key is wrapped under master key %s, which this server does not hold: %w",
				ref.MasterKeyID, envelope.ErrUnknownKey)
		}
		root, err := k.unwrap(h.Tenant, ref.Version, ref.MasterKeyID, wrapped)
		if err != nil {
			return nil, err
		}
		defer clear(root)
		return sealing.DeriveTenantKey(root, sealing.PurposeFile, h.Tenant, ref.Version)
	}}
}

// Reload reads the master keys again and forgets every tenant's keys, so the next use reads
// them again: another process rotated a master or tenant key.
func (k *Keys) Reload() error {
	err := k.Master.Reload()
	if k.Legacy != nil {
		err = errors.Join(err, k.Legacy.Reload())
	}
	k.Forget("")
	return err
}

// Audit is tenant keys as the audit chain takes them: the audit key of each version, so
// the chain is keyed under the key of its tenant's current version and a record names the
// version that chained it.
func (k *Keys) Audit() audit.Keys { return auditKeys{k} }

type auditKeys struct{ k *Keys }

func (a auditKeys) Current(ctx context.Context, tenant string) (int, []byte, error) {
	v, err := a.k.Current(ctx, tenant)
	if err != nil {
		return 0, nil, err
	}
	key, err := v.AuditKey()
	return v.N, key, err
}

func (a auditKeys) Version(ctx context.Context, tenant string, n int) ([]byte, error) {
	v, err := a.k.Version(ctx, tenant, n)
	if errors.Is(err, ErrNoKey) {
		return nil, fmt.Errorf("%w: %w", audit.ErrUnknownKeyVersion, err)
	}
	if err != nil {
		return nil, err
	}
	return v.AuditKey()
}

// RuntimeKey is tenant's runtime key: the file keys of every version of its key, which
// open its credentials.json and nothing else.
func (k *Keys) RuntimeKey(ctx context.Context, tenant string) (*credfile.RuntimeKey, error) {
	versions, err := k.Versions(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rk := &credfile.RuntimeKey{Tenant: tenant, Keys: make(map[int]secret.Bytes, len(versions))}
	for _, v := range versions {
		if rk.Keys[v.N], err = v.FileKey(); err != nil {
			return nil, err
		}
	}
	return rk, nil
}
