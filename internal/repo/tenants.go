package repo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// The NOTIFY channels. Notifications are delivered only to sessions that LISTEN, which
// needs a connection of its own past any transaction pooler (see Listen).
const (
	// GenerationChannel carries the tenant's ID on every change of its generation.
	GenerationChannel = "loopze_generation"
	// KeyringChannel is signalled, with an empty payload, when the master key rotated:
	// every server that hears it reloads its key ring and rewrites its files.
	KeyringChannel = "loopze_keyring"
)

// Listen subscribes conn to GenerationChannel and KeyringChannel. LISTEN is session
// state: conn must be a direct connection (or one through a session pooler), held for as
// long as notifications are wanted, never a pooled connection of a transaction pooler.
func Listen(ctx context.Context, conn *pgx.Conn) error {
	for _, ch := range []string{GenerationChannel, KeyringChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("listen on %s: %w", ch, err)
		}
	}
	return nil
}

// AnnounceKeyRotation notifies KeyringChannel. NOTIFY is transactional and keeps no session
// state, so q may be any pool, through a pooler or not.
func AnnounceKeyRotation(ctx context.Context, q db.DBTX) error {
	_, err := q.Exec(ctx, `SELECT pg_notify($1, '')`, KeyringChannel)
	return mapErr("announce key rotation", err)
}

// TenantHasData reports whether the tenant holds any entry, workspace, reference or node
// secret: a restore refuses such a tenant unless told to replace it.
func TenantHasData(ctx context.Context, q db.DBTX, tenant string) (bool, error) {
	var has bool
	err := q.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM entries WHERE tenant_id = $1) OR
		EXISTS (SELECT 1 FROM workspaces WHERE tenant_id = $1) OR
		EXISTS (SELECT 1 FROM entry_references WHERE tenant_id = $1) OR
		EXISTS (SELECT 1 FROM node_secrets WHERE tenant_id = $1)`, tenant).Scan(&has)
	return has, mapErr("check tenant for data", err)
}

// ClearTenantData deletes the tenant's references, node secrets, workspace and entries, in
// the order the foreign keys need. The tenant row and its generation stay.
func ClearTenantData(ctx context.Context, q db.DBTX, tenant string) error {
	for _, table := range []string{"entry_references", "node_secrets", "workspaces", "entries"} {
		if _, err := q.Exec(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1`, tenant); err != nil {
			return mapErr("clear "+table, err)
		}
	}
	return nil
}

// RaiseGeneration moves the tenant's generation past floor (to max(generation, floor)+1)
// and queues the change notification, like BumpGeneration. A restore uses it so the
// restored tenant's generation is ahead of the file it came from, and the export job
// rewrites that file under the current key.
func RaiseGeneration(ctx context.Context, q db.DBTX, tenant string, floor int64) (int64, error) {
	var gen int64
	err := q.QueryRow(ctx, `
		INSERT INTO tenants (id, generation) VALUES ($1, greatest($2::bigint, 0) + 1)
		ON CONFLICT (id) DO UPDATE SET generation = greatest(tenants.generation, $2::bigint) + 1
		RETURNING generation`, tenant, floor).Scan(&gen)
	if err != nil {
		return 0, mapErr("raise generation", err)
	}
	if _, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, GenerationChannel, tenant); err != nil {
		return 0, mapErr("notify generation", err)
	}
	return gen, nil
}

// bumpGenerationSQL moves a tenant's generation (creating its row on the first write) and
// queues a notification, delivered when and only if the transaction commits. $2 is
// GenerationChannel.
const bumpGenerationSQL = `
	WITH g AS (
		INSERT INTO tenants (id, generation) VALUES ($1, 1)
		ON CONFLICT (id) DO UPDATE SET generation = tenants.generation + 1
		RETURNING generation)
	SELECT generation, pg_notify($2, $1) IS NULL FROM g`

// BumpGeneration moves the tenant's generation in the caller's transaction and queues a
// notification that is delivered when (and only if) that transaction commits. It creates
// the tenant row when missing, so every write path calls just this.
func BumpGeneration(ctx context.Context, q db.DBTX, tenant string) (int64, error) {
	var (
		gen  int64
		void bool
	)
	if err := q.QueryRow(ctx, bumpGenerationSQL, tenant, GenerationChannel).Scan(&gen, &void); err != nil {
		return 0, mapErr("bump generation", err)
	}
	return gen, nil
}

// Tenant is one row of tenants.
type Tenant struct {
	ID         string
	Generation int64
}

// ListTenants returns every tenant, ordered by ID.
func ListTenants(ctx context.Context, q db.DBTX) ([]Tenant, error) {
	rows, err := q.Query(ctx, `SELECT id, generation FROM tenants ORDER BY id`)
	if err != nil {
		return nil, mapErr("list tenants", err)
	}
	defer rows.Close()
	var out []Tenant
	for rows.Next() {
		var t Tenant
		if err := rows.Scan(&t.ID, &t.Generation); err != nil {
			return nil, mapErr("scan tenant", err)
		}
		out = append(out, t)
	}
	return out, mapErr("list tenants", rows.Err())
}

// GetGeneration returns the tenant's generation (0 for a tenant with no row yet).
func GetGeneration(ctx context.Context, q db.DBTX, tenant string) (int64, error) {
	var gen int64
	err := q.QueryRow(ctx, `SELECT coalesce((SELECT generation FROM tenants WHERE id = $1), 0)`, tenant).Scan(&gen)
	return gen, mapErr("read generation", err)
}
