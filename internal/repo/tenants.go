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

// A tenant's generation counts its committed changes: tenants.generation (what earlier
// releases counted, and what FoldChanges folded into it) plus the n of its tenant_changes rows
// (migration 00010). A change inserts a row, and inserts take no lock another write waits
// for, so the creates of one tenant commit side by side. In one snapshot the sum counts
// exactly the changes committed before it, and a later snapshot sees every change an
// earlier one saw: generations never go back, and two reads of one generation read the
// same data.
const generationExpr = `coalesce((SELECT generation FROM tenants WHERE id = $1), 0) +
	coalesce((SELECT sum(n) FROM tenant_changes WHERE tenant_id = $1), 0)`

// changeSQL records one change of tenant $1 and queues the notification, delivered when
// and only if the transaction commits. It is what a create runs: it locks nothing. $2 is
// GenerationChannel.
const changeSQL = `
	WITH c AS (INSERT INTO tenant_changes (tenant_id) VALUES ($1))
	SELECT pg_notify($2, $1)`

// bumpGenerationSQL records one change like changeSQL, and first creates the tenant's row
// when it has none or otherwise locks it FOR NO KEY UPDATE; it returns the generation as
// the statement's snapshot sees it after the change. Every write but a create runs it, so
// updates, deletes, restores of versions and deploys of one tenant stay ordered against
// each other (a delete's reference count stays true until it commits). That lock does not
// conflict with the FOR KEY SHARE lock the foreign keys of a create's inserts take on the
// row, so creates do not wait for it. The row's first writer holds it as its inserter.
// The count of both sources is returned so that the statement evaluates the lock (an
// unused CTE is not run); it is 1.
const bumpGenerationSQL = `
	WITH t AS (INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING RETURNING id),
	l AS (SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE),
	c AS (INSERT INTO tenant_changes (tenant_id) VALUES ($1))
	SELECT ` + generationExpr + ` + 1, pg_notify($2, $1) IS NULL, locked.n
	FROM (SELECT count(*) AS n FROM (SELECT id FROM t UNION ALL SELECT id FROM l) u) locked`

// BumpGeneration records a change of the tenant in the caller's transaction, taking the
// tenant's row lock (see bumpGenerationSQL) and creating its row when missing, and queues a
// notification that is delivered when (and only if) that transaction commits. It returns
// the generation the change takes the tenant to, as the transaction sees it (changes that
// other transactions commit meanwhile can move it further).
func BumpGeneration(ctx context.Context, q db.DBTX, tenant string) (int64, error) {
	var (
		gen, locked int64
		void        bool
	)
	if err := q.QueryRow(ctx, bumpGenerationSQL, tenant, GenerationChannel).Scan(&gen, &void, &locked); err != nil {
		return 0, mapErr("bump generation", err)
	}
	return gen, nil
}

// RaiseGeneration moves the tenant's generation past floor (to max(generation, floor)+1,
// or further when changes commit meanwhile) and queues the change notification. It locks
// the tenant's row FOR UPDATE, which the foreign keys of every insert of the tenant wait
// for, so nothing is written to the tenant until the caller's transaction ends. A restore
// uses it so the restored tenant's generation is ahead of the file it came from, and the
// export job rewrites that file under the current key.
func RaiseGeneration(ctx context.Context, q db.DBTX, tenant string, floor int64) (int64, error) {
	if _, err := q.Exec(ctx, ensureTenantSQL, tenant); err != nil {
		return 0, mapErr("raise generation", err)
	}
	if _, err := q.Exec(ctx, `SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE`, tenant); err != nil {
		return 0, mapErr("raise generation", err)
	}
	var gen int64
	err := q.QueryRow(ctx, `
		WITH g AS (SELECT `+generationExpr+` AS g),
		c AS (INSERT INTO tenant_changes (tenant_id, n) SELECT $1, greatest(g, $2::bigint) + 1 - g FROM g RETURNING n)
		SELECT g + n FROM g, c`, tenant, floor).Scan(&gen)
	if err != nil {
		return 0, mapErr("raise generation", err)
	}
	if _, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, GenerationChannel, tenant); err != nil {
		return 0, mapErr("notify generation", err)
	}
	return gen, nil
}

// FoldChanges adds the tenant's change rows into tenants.generation and deletes them, in
// one statement, keeping the generation: no reader sees a different sum. It keeps reading
// a generation a lookup of a row or two, and keeps tenants.generation (all that replicas
// of earlier releases read) close behind. It never waits: while another write holds the
// tenant's row it folds nothing, and the next call does. It commits without waiting for
// the disk: a fold lost in a crash leaves the rows unfolded, the same generation. q is a
// pool (the batch is a transaction of its own). The export calls it before it reads a
// tenant.
func FoldChanges(ctx context.Context, q db.DBTX, tenant string) error {
	b := &pgx.Batch{}
	// set_config, not SET LOCAL: the batch is an implicit transaction, which SET LOCAL
	// applies to too but warns about in the server's log at every fold.
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	b.Queue(`
		WITH t AS (SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED),
		d AS (DELETE FROM tenant_changes WHERE tenant_id = (SELECT id FROM t) RETURNING n)
		UPDATE tenants SET generation = generation + (SELECT sum(n) FROM d)
		WHERE id = (SELECT id FROM t) AND EXISTS (SELECT 1 FROM d)`, tenant)
	return mapErr("fold changes", q.SendBatch(ctx, b).Close())
}

// Tenant is one row of tenants.
type Tenant struct {
	ID         string
	Generation int64
}

// ListTenants returns every tenant, ordered by ID.
func ListTenants(ctx context.Context, q db.DBTX) ([]Tenant, error) {
	rows, err := q.Query(ctx, `SELECT t.id, t.generation + coalesce(c.n, 0) FROM tenants t
		LEFT JOIN (SELECT tenant_id, sum(n) AS n FROM tenant_changes GROUP BY tenant_id) c ON c.tenant_id = t.id
		ORDER BY t.id`)
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

// GetGeneration returns the tenant's generation (0 for a tenant with no change yet).
func GetGeneration(ctx context.Context, q db.DBTX, tenant string) (int64, error) {
	var gen int64
	err := q.QueryRow(ctx, `SELECT `+generationExpr, tenant).Scan(&gen)
	return gen, mapErr("read generation", err)
}
