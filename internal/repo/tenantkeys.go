package repo

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopze/certstore/internal/db"
)

// TenantKey is one version of a tenant's key, as stored: wrapped under the master key
// MasterKeyID. Never the key itself.
type TenantKey struct {
	TenantID    string
	Version     int
	MasterKeyID string
	Wrapped     []byte
	CreatedAt   time.Time
}

// TenantKeys returns every version of tenant's key, oldest first. It scopes itself (see
// scopedQuery): one round trip from a pool.
func TenantKeys(ctx context.Context, q db.DBTX, tenant string) ([]TenantKey, error) {
	var out []TenantKey
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var k TenantKey
			if err := rows.Scan(&k.TenantID, &k.Version, &k.MasterKeyID, &k.Wrapped, &k.CreatedAt); err != nil {
				return err
			}
			out = append(out, k)
		}
		return rows.Err()
	}, `SELECT tenant_id, version, master_key_id, wrapped, created_at FROM tenant_keys
		WHERE tenant_id = $1 ORDER BY version`, tenant)
	return out, mapErr("read the keys of "+tenant, err)
}

// AddTenantKey stores a version of tenant's key unless that version exists already (another
// process made it first); it reports whether this one was stored. The tenant's row is
// created when it has none. It scopes itself: one round trip from a pool.
func AddTenantKey(ctx context.Context, q db.DBTX, k TenantKey) (bool, error) {
	var added bool
	err := sendTenantBatch(ctx, q, k.TenantID, func(b *pgx.Batch) {
		b.Queue(`INSERT INTO tenant_keys (tenant_id, version, master_key_id, wrapped) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tenant_id, version) DO NOTHING`, k.TenantID, k.Version, k.MasterKeyID, k.Wrapped).
			Exec(func(tag pgconn.CommandTag) error {
				added = tag.RowsAffected() == 1
				return nil
			})
	})
	return added, mapErr("store a key of "+k.TenantID, err)
}

// RewrapTenantKey replaces the wrapping of one version of a tenant's key, wrapped under
// fromMasterKeyID, by wrapped under masterKeyID; it reports whether the row still had the
// old wrapping (a concurrent rewrap may have done it). It scopes itself.
func RewrapTenantKey(ctx context.Context, q db.DBTX, tenant string, version int, fromMasterKeyID, masterKeyID string, wrapped []byte) (bool, error) {
	var done bool
	err := sendTenantBatch(ctx, q, tenant, func(b *pgx.Batch) {
		b.Queue(`UPDATE tenant_keys SET master_key_id = $4, wrapped = $5
			WHERE tenant_id = $1 AND version = $2 AND master_key_id = $3`, tenant, version, fromMasterKeyID, masterKeyID, wrapped).
			Exec(func(tag pgconn.CommandTag) error {
				done = tag.RowsAffected() == 1
				return nil
			})
	})
	return done, mapErr("rewrap a key of "+tenant, err)
}
