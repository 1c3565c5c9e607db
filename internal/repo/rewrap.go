package repo

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// This file holds the SQL of master key rotation: finding the rows sealed under an older
// key, writing them back rewrapped in batches, and counting rows per key.

// EntriesToRewrap locks and returns up to limit inline entries of tenant whose material is
// wrapped under another master key than keyID.
func EntriesToRewrap(ctx context.Context, q db.DBTX, tenant, keyID string, limit int) ([]*Entry, error) {
	rows, err := q.Query(ctx, `SELECT `+entryColumns+` FROM entries
		WHERE tenant_id = $1 AND key_id IS NOT NULL AND key_id <> $2
		ORDER BY id LIMIT $3 FOR UPDATE`, tenant, keyID, limit)
	if err != nil {
		return nil, mapErr("select entries to rewrap", err)
	}
	return collectEntries(rows, "select entries to rewrap")
}

// NodeSecretsToRewrap locks and returns up to limit node secrets of tenant wrapped under
// another master key than keyID.
func NodeSecretsToRewrap(ctx context.Context, q db.DBTX, tenant, keyID string, limit int) ([]NodeSecret, error) {
	return queryNodeSecrets(ctx, q, "select node secrets to rewrap", `
		SELECT node_id, name, sealed, key_id FROM node_secrets
		WHERE tenant_id = $1 AND key_id <> $2 ORDER BY node_id, name LIMIT $3 FOR UPDATE`,
		tenant, keyID, limit)
}

// RewrapEntries stores rewrapped material and its key ID for each entry, in one round trip.
// Neither the version nor the generation moves: the material itself is unchanged.
func RewrapEntries(ctx context.Context, q db.DBTX, entries []*Entry) error {
	b := &pgx.Batch{}
	for _, e := range entries {
		b.Queue(`UPDATE entries SET cert_sealed = $3, key_sealed = $4, key_id = $5
			WHERE tenant_id = $1 AND id = $2`, e.TenantID, e.ID, e.Sealed.Cert, e.Sealed.Key, e.Sealed.KeyID)
	}
	return execBatch(ctx, q, b, "rewrap entries")
}

// RewrapNodeSecrets stores rewrapped node secrets and their key ID, in one round trip.
func RewrapNodeSecrets(ctx context.Context, q db.DBTX, tenant string, rows []NodeSecret) error {
	b := &pgx.Batch{}
	for _, s := range rows {
		b.Queue(`UPDATE node_secrets SET sealed = $4, key_id = $5
			WHERE tenant_id = $1 AND node_id = $2 AND name = $3`, tenant, s.NodeID, s.Name, s.Sealed, s.KeyID)
	}
	return execBatch(ctx, q, b, "rewrap node secrets")
}

// KeyUsage counts, for one tenant, the sealed rows (inline entries, their versions and
// node secrets) per master key ID.
func KeyUsage(ctx context.Context, q db.DBTX, tenant string) (map[string]int64, error) {
	rows, err := q.Query(ctx, `
		SELECT key_id, count(*) FROM (
			SELECT key_id FROM entries WHERE tenant_id = $1 AND key_id IS NOT NULL
			UNION ALL
			SELECT key_id FROM entry_versions WHERE tenant_id = $1 AND key_id IS NOT NULL
			UNION ALL
			SELECT key_id FROM node_secrets WHERE tenant_id = $1
		) k GROUP BY key_id`, tenant)
	if err != nil {
		return nil, mapErr("count key usage", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, mapErr("scan key usage", err)
		}
		out[id] = n
	}
	return out, mapErr("count key usage", rows.Err())
}
