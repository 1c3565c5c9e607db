package repo

import (
	"context"

	"github.com/loopze/certstore/internal/db"
)

// GenerationChannel is the NOTIFY channel that carries "tenant:generation" on every change.
const GenerationChannel = "loopze_generation"

// EnsureTenant creates the tenant's row on its first write.
func EnsureTenant(ctx context.Context, q db.DBTX, tenant string) error {
	_, err := q.Exec(ctx, `INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, tenant)
	return mapErr("ensure tenant", err)
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
