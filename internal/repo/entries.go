package repo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/sealing"
)

// Entry is one catalogue row. Sealed fields hold envelope ciphertext, never PEM.
type Entry struct {
	TenantID string
	ID       string
	Name     string
	Type     material.Kind
	Source   string
	Notes    string
	CertPath string
	KeyPath  string
	// Sealed is an inline entry's material; empty for a file entry, and when the row was
	// read without it (listings).
	Sealed    sealing.Pair
	Meta      material.Metadata
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
	// RefCount is filled by List and Get: how many deployed node fields reference the entry.
	RefCount int

	// PassphrasePath is a file-sourced entry's passphrase file; empty when none.
	PassphrasePath string
}

const entryColumns = `tenant_id, id, name, type, source, notes, coalesce(cert_path, ''), coalesce(key_path, ''),
	cert_sealed, key_sealed, coalesce(key_id, ''), ` + metaColumns + `, version, created_at, updated_at,
	coalesce(passphrase_path, '')`

// listColumns are entryColumns without the sealed material, which listings never show:
// a page of 100 entries then moves kilobytes, not hundreds of them.
const listColumns = `tenant_id, id, name, type, source, notes, coalesce(cert_path, ''), coalesce(key_path, ''),
	NULL::bytea, NULL::bytea, coalesce(key_id, ''), ` + metaColumns + `, version, created_at, updated_at,
	coalesce(passphrase_path, '')`

func scanEntry(row pgx.Row, extra ...any) (*Entry, error) {
	var e Entry
	dest := []any{&e.TenantID, &e.ID, &e.Name, &e.Type, &e.Source, &e.Notes, &e.CertPath, &e.KeyPath,
		&e.Sealed.Cert, &e.Sealed.Key, &e.Sealed.KeyID}
	dest = append(append(dest, metaDest(&e.Meta)...), &e.Version, &e.CreatedAt, &e.UpdatedAt, &e.PassphrasePath)
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	return &e, nil
}

// collectEntries scans every row of an entryColumns query and closes rows.
func collectEntries(rows pgx.Rows, what string) ([]*Entry, error) {
	defer rows.Close()
	var out []*Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, mapErr("scan entry", err)
		}
		out = append(out, e)
	}
	return out, mapErr(what, rows.Err())
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ensureTenantSQL creates a tenant's row when it has none, without moving its generation.
// It waits for a transaction that updates an existing row (a replica of an earlier
// release moving tenants.generation, a fold), so the writes that need the row find out
// from the foreign key that it is missing (missingTenant) and only then send it.
const ensureTenantSQL = `INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`

// sendTenantBatch sends a batch scoped to tenant (db.TenantBatch), with fill's statements,
// as one implicit transaction. When a foreign key finds the tenant's row missing (its
// first write), it sends the batch again with the row created first.
func sendTenantBatch(ctx context.Context, q db.DBTX, tenant string, fill func(*pgx.Batch)) error {
	send := func(ensure bool) error {
		b := db.TenantBatch(tenant)
		if ensure {
			b.Queue(ensureTenantSQL, tenant)
		}
		fill(b)
		return q.SendBatch(ctx, b).Close()
	}
	err := send(false)
	if missingTenant(err) {
		err = send(true)
	}
	return err
}

// missingTenant reports whether err is a foreign key refusing a row because its tenant has
// no row in tenants yet (the tenant's first write).
func missingTenant(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503" && strings.HasSuffix(pgErr.ConstraintName, "_tenant_id_fkey")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// GetEntry returns what is shown of one entry of tenant, with its reference count and
// without the sealed material (Sealed is empty); ErrNotFound when it does
// not exist there. It scopes itself (see scopedQuery), so it takes a pool as well as a
// transaction, in one round trip either way.
func GetEntry(ctx context.Context, q db.DBTX, tenant, id string) (*Entry, error) {
	var page []*Entry
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) (err error) {
		page, _, err = collectPage(rows, 1)
		return err
	}, `SELECT `+listColumns+`, `+refCountExpr+` FROM entries e WHERE tenant_id = $1 AND id = $2`, tenant, id)
	if err != nil {
		return nil, mapErr("get entry "+id, err)
	}
	if len(page) == 0 {
		return nil, mapErr("get entry "+id, pgx.ErrNoRows)
	}
	return page[0], nil
}

// ListFilter narrows and pages a listing. Entries come sorted by ID; After is the cursor
// (the last ID of the previous page).
type ListFilter struct {
	Type         string
	Source       string
	ExpiringBy   *time.Time // not_after before this instant
	After        string
	Limit        int
	Search       string // case-insensitive substring of id, name, subject, issuer, notes
	WithoutTotal bool
}

// ListEntries returns up to f.Limit entries of tenant after f.After, and whether more
// follow. Sealed material is left out (Entry.Sealed is empty). It scopes
// itself, so it takes a pool as well as a transaction, in one round trip either way.
func ListEntries(ctx context.Context, q db.DBTX, tenant string, f ListFilter) ([]*Entry, bool, error) {
	sql, args, limit := listQuery(tenant, f)
	var (
		out  []*Entry
		more bool
	)
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) (err error) {
		out, more, err = collectPage(rows, limit)
		return err
	}, sql, args...)
	if err != nil {
		return nil, false, mapErr("list entries", err)
	}
	return out, more, nil
}

// scopedQuery runs one query behind the tenant scope, as one batch (db.TenantBatch), and
// hands its rows to collect. On a pool the batch is one implicit transaction the scope
// covers; in a transaction of the caller's, already scoped, the scope is set again to the
// same tenant. Either way it is one round trip.
func scopedQuery(ctx context.Context, q db.DBTX, tenant string, collect func(pgx.Rows) error, sql string, args ...any) error {
	b := db.TenantBatch(tenant)
	b.Queue(sql, args...)
	br, err := db.SendTenantBatch(ctx, q, b)
	if err != nil {
		return err
	}
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return err
	}
	if err := collect(rows); err != nil {
		return err
	}
	return br.Close()
}

func listQuery(tenant string, f ListFilter) (string, []any, int) {
	var (
		where = []string{"tenant_id = $1"}
		args  = []any{tenant}
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Type != "" {
		add("type = $%d", f.Type)
	}
	if f.Source != "" {
		add("source = $%d", f.Source)
	}
	if f.ExpiringBy != nil {
		add("not_after < $%d", *f.ExpiringBy)
	}
	if f.After != "" {
		add("id > $%d", f.After)
	}
	if f.Search != "" {
		add("(id || ' ' || name || ' ' || subject || ' ' || issuer || ' ' || notes) ILIKE '%%' || $%d || '%%'", escapeLike(f.Search))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit+1)
	sql := fmt.Sprintf(`SELECT %s, %s FROM entries e WHERE %s ORDER BY id LIMIT $%d`,
		listColumns, refCountExpr, strings.Join(where, " AND "), len(args))
	return sql, args, limit
}

// collectPage scans rows of entry columns plus the reference count, up to limit, and
// reports whether more followed; it closes rows.
func collectPage(rows pgx.Rows, limit int) ([]*Entry, bool, error) {
	defer rows.Close()
	out := make([]*Entry, 0, min(limit, 128))
	for rows.Next() {
		var refs int
		e, err := scanEntry(rows, &refs)
		if err != nil {
			return nil, false, mapErr("scan entry", err)
		}
		e.RefCount = refs
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr("list entries", err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// refCountExpr is an entry's reference count (alias e), kept by triggers on
// entry_references (migration 00004).
const refCountExpr = `e.ref_count`

// ExportEntries returns every entry of tenant with its sealed material, ordered by ID.
func ExportEntries(ctx context.Context, q db.DBTX, tenant string) ([]*Entry, error) {
	entries, _, err := ExportEntriesStamped(ctx, q, tenant, nil)
	return entries, err
}

// RowStamp names the stored row of one entry: its ID and the transaction that wrote the
// row (xmin). Every write of an entry writes a new row, an update, a restore and a rewrap
// under a new key included, so an unchanged stamp means unchanged content.
type RowStamp struct {
	ID   string
	XMin uint32
	// Version and UpdatedAt move with every change of the entry's content as well; with
	// them, a stamp stays unique even across the wraparound of transaction IDs.
	Version   int64
	UpdatedAt time.Time
}

// ExportStamps returns the row stamp of every entry of tenant, ordered by ID, without
// their sealed material: what an export compares with the rows it encoded before, so that
// it reads in full only those that changed.
func ExportStamps(ctx context.Context, q db.DBTX, tenant string) ([]RowStamp, error) {
	rows, err := q.Query(ctx, `SELECT id, xmin, version, updated_at FROM entries WHERE tenant_id = $1 ORDER BY id`, tenant)
	if err != nil {
		return nil, mapErr("export stamps", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RowStamp, error) {
		var s RowStamp
		err := row.Scan(&s.ID, &s.XMin, &s.Version, &s.UpdatedAt)
		return s, err
	})
	return out, mapErr("export stamps", err)
}

// ExportEntriesStamped returns the entries of tenant named by ids, or every entry when ids
// is nil, with their sealed material and row stamps, ordered by ID.
func ExportEntriesStamped(ctx context.Context, q db.DBTX, tenant string, ids []string) ([]*Entry, []uint32, error) {
	sql, args := `SELECT `+entryColumns+`, xmin FROM entries WHERE tenant_id = $1 ORDER BY id`, []any{tenant}
	if ids != nil {
		sql, args = `SELECT `+entryColumns+`, xmin FROM entries WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id`, []any{tenant, ids}
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, nil, mapErr("export entries", err)
	}
	defer rows.Close()
	var (
		out   []*Entry
		xmins []uint32
	)
	for rows.Next() {
		var x uint32
		e, err := scanEntry(rows, &x)
		if err != nil {
			return nil, nil, mapErr("scan entry", err)
		}
		out, xmins = append(out, e), append(xmins, x)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, mapErr("export entries", err)
	}
	return out, xmins, nil
}

// ExpiryRow is what the expiry metric needs of an entry.
type ExpiryRow struct {
	ID       string
	Type     string
	Source   string
	CertPath string
	NotAfter time.Time
	// PassphrasePath is a file entry's passphrase file, which a PKCS#12 certPath needs.
	PassphrasePath string
}

// ListExpiry returns the expiry of every entry of tenant, ordered by ID.
func ListExpiry(ctx context.Context, q db.DBTX, tenant string) ([]ExpiryRow, error) {
	rows, err := q.Query(ctx, `SELECT id, type, source, coalesce(cert_path, ''), not_after, coalesce(passphrase_path, '')
		FROM entries WHERE tenant_id = $1 ORDER BY id`, tenant)
	if err != nil {
		return nil, mapErr("list expiry", err)
	}
	defer rows.Close()
	var out []ExpiryRow
	for rows.Next() {
		var r ExpiryRow
		if err := rows.Scan(&r.ID, &r.Type, &r.Source, &r.CertPath, &r.NotAfter, &r.PassphrasePath); err != nil {
			return nil, mapErr("scan expiry", err)
		}
		out = append(out, r)
	}
	return out, mapErr("list expiry", rows.Err())
}

// EntryKinds returns the type of every entry of tenant among ids, in one query. The rows
// are share-locked until the transaction ends, so a concurrent type change or delete waits
// for the deploy that reads them.
func EntryKinds(ctx context.Context, q db.DBTX, tenant string, ids []string) (map[string]material.Kind, error) {
	rows, err := q.Query(ctx, `SELECT id, type FROM entries WHERE tenant_id = $1 AND id = ANY($2) FOR KEY SHARE`, tenant, ids)
	if err != nil {
		return nil, mapErr("look up referenced entries", err)
	}
	defer rows.Close()
	out := make(map[string]material.Kind, len(ids))
	for rows.Next() {
		var (
			id string
			k  material.Kind
		)
		if err := rows.Scan(&id, &k); err != nil {
			return nil, mapErr("scan referenced entry", err)
		}
		out[id] = k
	}
	return out, mapErr("look up referenced entries", rows.Err())
}

// LookupEntries returns the entries of tenant among ids (those that exist), with their
// sealed material, in one round trip. It scopes itself (see scopedQuery), so it takes a
// pool as well as a transaction: connection init calls it on every dial without a
// transaction, where four round trips (begin, scope, query, commit) would be most of the
// cost.
func LookupEntries(ctx context.Context, q db.DBTX, tenant string, ids []string) ([]*Entry, error) {
	var out []*Entry
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) (err error) {
		out, err = collectEntries(rows, "look up entries")
		return err
	}, `SELECT `+entryColumns+` FROM entries WHERE tenant_id = $1 AND id = ANY($2)`, tenant, ids)
	if err != nil {
		return nil, mapErr("look up entries", err)
	}
	return out, nil
}
