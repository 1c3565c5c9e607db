package repo

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// This file holds the SQL of the credentials.json export and restore, of master key
// rotation and of the expiry metrics: whole-tenant reads of the raw (sealed) rows, the
// inserts a restore makes, and the batched rewrap updates. Every query runs inside a
// transaction scoped to the tenant (db.InTenant), like the rest of the package.

// NodeSecretRow is one sealed node credential (or inline TLS PEM of a node): the value is
// envelope ciphertext bound to (tenant, "node:"+NodeID, Name).
type NodeSecretRow struct {
	NodeID string
	Name   string
	Sealed []byte
	KeyID  string
}

// ExportEntries returns every entry of tenant with its sealed material, ordered by ID.
func ExportEntries(ctx context.Context, q db.DBTX, tenant string) ([]*Entry, error) {
	rows, err := q.Query(ctx, `SELECT `+entryColumns+` FROM entries WHERE tenant_id = $1 ORDER BY id`, tenant)
	if err != nil {
		return nil, mapErr("export entries", err)
	}
	return collectEntries(rows, "export entries")
}

// ExportWorkspace returns the tenant's deployed workspace document as JSON; nil when the
// tenant never deployed.
func ExportWorkspace(ctx context.Context, q db.DBTX, tenant string) ([]byte, error) {
	var flows []byte
	err := q.QueryRow(ctx, `SELECT flows::text FROM workspaces WHERE tenant_id = $1`, tenant).Scan(&flows)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	return flows, mapErr("export workspace", err)
}

// ExportReferences returns every reference of the tenant's deployed nodes to entries, in
// (entry, flow, node, field) order.
func ExportReferences(ctx context.Context, q db.DBTX, tenant string) ([]Reference, error) {
	rows, err := q.Query(ctx, `
		SELECT entry_id, flow_id, node_id, node_type, field FROM entry_references
		WHERE tenant_id = $1 ORDER BY entry_id, flow_id, node_id, field`, tenant)
	if err != nil {
		return nil, mapErr("export references", err)
	}
	return collectReferences(rows, "export references")
}

// ExportNodeSecrets returns every sealed node secret of the tenant, in (node, name) order.
func ExportNodeSecrets(ctx context.Context, q db.DBTX, tenant string) ([]NodeSecretRow, error) {
	return queryNodeSecrets(ctx, q, "export node secrets",
		`SELECT node_id, name, sealed, key_id FROM node_secrets WHERE tenant_id = $1 ORDER BY node_id, name`, tenant)
}

func queryNodeSecrets(ctx context.Context, q db.DBTX, what, sql string, args ...any) ([]NodeSecretRow, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, mapErr(what, err)
	}
	defer rows.Close()
	var out []NodeSecretRow
	for rows.Next() {
		var s NodeSecretRow
		if err := rows.Scan(&s.NodeID, &s.Name, &s.Sealed, &s.KeyID); err != nil {
			return nil, mapErr("scan node secret", err)
		}
		out = append(out, s)
	}
	return out, mapErr(what, rows.Err())
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

// ImportEntries inserts restored entries in one round trip, keeping their creation and
// update times. The caller has sealed the material under the current key. (COPY would be
// faster but PostgreSQL refuses it on tables under row-level security.)
func ImportEntries(ctx context.Context, q db.DBTX, entries []*Entry) error {
	now := time.Now()
	b := &pgx.Batch{}
	for _, e := range entries {
		created, updated := e.CreatedAt, e.UpdatedAt
		if created.IsZero() {
			created = now
		}
		if updated.IsZero() {
			updated = created
		}
		b.Queue(`
			INSERT INTO entries (tenant_id, id, name, type, source, notes, cert_path, key_path,
				cert_sealed, key_sealed, key_id, fingerprint_sha256, subject, issuer, serial_number,
				not_before, not_after, dns_names, cert_count, key_algorithm, has_private_key,
				created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
				$19, $20, $21, $22, $23)`,
			e.TenantID, e.ID, e.Name, string(e.Type), e.Source, e.Notes, nullIfEmpty(e.CertPath),
			nullIfEmpty(e.KeyPath), e.CertSealed, e.KeySealed, nullIfEmpty(e.KeyID), e.Meta.FingerprintSHA256,
			e.Meta.Subject, e.Meta.Issuer, e.Meta.SerialNumber, e.Meta.NotBefore, e.Meta.NotAfter,
			nonNil(e.Meta.DNSNames), e.Meta.CertCount, e.Meta.KeyAlgorithm, e.Meta.HasPrivateKey,
			created, updated)
	}
	return execBatch(ctx, q, b, "import entries")
}

// ImportWorkspace stores the tenant's workspace document (JSON) as restored.
func ImportWorkspace(ctx context.Context, q db.DBTX, tenant string, flows []byte) error {
	_, err := q.Exec(ctx, `
		INSERT INTO workspaces (tenant_id, flows) VALUES ($1, $2::jsonb)
		ON CONFLICT (tenant_id) DO UPDATE SET flows = EXCLUDED.flows, version = workspaces.version + 1, updated_at = now()`,
		tenant, string(flows))
	return mapErr("import workspace", err)
}

// ImportReferences inserts restored references; each must name an entry of the tenant.
func ImportReferences(ctx context.Context, q db.DBTX, tenant string, refs []Reference) error {
	b := &pgx.Batch{}
	for _, r := range refs {
		b.Queue(`INSERT INTO entry_references (tenant_id, entry_id, flow_id, node_id, node_type, field)
			VALUES ($1, $2, $3, $4, $5, $6)`, tenant, r.EntryID, r.FlowID, r.NodeID, r.NodeType, r.Field)
	}
	return execBatch(ctx, q, b, "import references")
}

// ImportNodeSecrets inserts restored node secrets, sealed by the caller.
func ImportNodeSecrets(ctx context.Context, q db.DBTX, tenant string, rows []NodeSecretRow) error {
	b := &pgx.Batch{}
	for _, s := range rows {
		b.Queue(`INSERT INTO node_secrets (tenant_id, node_id, name, sealed, key_id) VALUES ($1, $2, $3, $4, $5)`,
			tenant, s.NodeID, s.Name, s.Sealed, s.KeyID)
	}
	return execBatch(ctx, q, b, "import node secrets")
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

// EntriesToRewrap locks and returns up to limit inline entries of tenant whose material is
// wrapped under another master key than keyID.
func EntriesToRewrap(ctx context.Context, q db.DBTX, tenant, keyID string, limit int) ([]*Entry, error) {
	rows, err := q.Query(ctx, `SELECT `+entryColumns+` FROM entries
		WHERE tenant_id = $1 AND key_id IS NOT NULL AND key_id <> $2
		ORDER BY id LIMIT $3 FOR UPDATE`, tenant, keyID, limit)
	if err != nil {
		return nil, mapErr("select entries to rewrap", err)
	}
	defer rows.Close()
	var out []*Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, mapErr("scan entry", err)
		}
		out = append(out, e)
	}
	return out, mapErr("select entries to rewrap", rows.Err())
}

// NodeSecretsToRewrap locks and returns up to limit node secrets of tenant wrapped under
// another master key than keyID.
func NodeSecretsToRewrap(ctx context.Context, q db.DBTX, tenant, keyID string, limit int) ([]NodeSecretRow, error) {
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
			WHERE tenant_id = $1 AND id = $2`, e.TenantID, e.ID, e.CertSealed, e.KeySealed, e.KeyID)
	}
	return execBatch(ctx, q, b, "rewrap entries")
}

// RewrapNodeSecrets stores rewrapped node secrets and their key ID, in one round trip.
func RewrapNodeSecrets(ctx context.Context, q db.DBTX, tenant string, rows []NodeSecretRow) error {
	b := &pgx.Batch{}
	for _, s := range rows {
		b.Queue(`UPDATE node_secrets SET sealed = $4, key_id = $5
			WHERE tenant_id = $1 AND node_id = $2 AND name = $3`, tenant, s.NodeID, s.Name, s.Sealed, s.KeyID)
	}
	return execBatch(ctx, q, b, "rewrap node secrets")
}

func execBatch(ctx context.Context, q db.DBTX, b *pgx.Batch, what string) error {
	if b.Len() == 0 {
		return nil
	}
	br := q.SendBatch(ctx, b)
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return mapErr(what, err)
		}
	}
	return mapErr(what, br.Close())
}

// KeyUsage counts, for one tenant, the sealed rows (inline entries and node secrets) per
// master key ID.
func KeyUsage(ctx context.Context, q db.DBTX, tenant string) (map[string]int64, error) {
	rows, err := q.Query(ctx, `
		SELECT key_id, count(*) FROM (
			SELECT key_id FROM entries WHERE tenant_id = $1 AND key_id IS NOT NULL
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

// ExpiryRow is what the expiry metric needs of an entry.
type ExpiryRow struct {
	ID       string
	Type     string
	Source   string
	CertPath string
	NotAfter time.Time
}

// ListExpiry returns the expiry of every entry of tenant, ordered by ID.
func ListExpiry(ctx context.Context, q db.DBTX, tenant string) ([]ExpiryRow, error) {
	rows, err := q.Query(ctx, `SELECT id, type, source, coalesce(cert_path, ''), not_after
		FROM entries WHERE tenant_id = $1 ORDER BY id`, tenant)
	if err != nil {
		return nil, mapErr("list expiry", err)
	}
	defer rows.Close()
	var out []ExpiryRow
	for rows.Next() {
		var r ExpiryRow
		if err := rows.Scan(&r.ID, &r.Type, &r.Source, &r.CertPath, &r.NotAfter); err != nil {
			return nil, mapErr("scan expiry", err)
		}
		out = append(out, r)
	}
	return out, mapErr("list expiry", rows.Err())
}
