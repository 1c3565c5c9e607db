package repo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/sealing"
)

// Version is one row of an entry's history: the entry as it was after a change (for a
// delete, as it was when deleted). Sealed fields hold envelope ciphertext bound to this
// version, never PEM.
type Version struct {
	TenantID     string
	EntryID      string
	Version      int64
	Action       string
	EntryVersion int64
	// RestoredFrom is the version a restore brought back; 0 otherwise.
	RestoredFrom int64
	Name         string
	Type         material.Kind
	Source       string
	Notes        string
	CertPath     string
	KeyPath      string
	// Sealed is an inline version's material, sealed for the version's place.
	Sealed    sealing.Pair
	Meta      material.Metadata
	ChangedAt time.Time
	ChangedBy string
}

// Version actions.
const (
	VersionCreate   = "create"
	VersionUpdate   = "update"
	VersionDelete   = "delete"
	VersionRestore  = "restore"
	VersionBaseline = "baseline"
)

// versionColumns are every column of a version, its sealed material included, as
// scanVersion reads them.
const versionColumns = `tenant_id, entry_id, version, action, entry_version, coalesce(restored_from, 0), name, type,
	source, notes, coalesce(cert_path, ''), coalesce(key_path, ''), cert_sealed, key_sealed, coalesce(key_id, ''),
	fingerprint_sha256, subject, issuer, serial_number, not_before, not_after, dns_names, cert_count,
	key_algorithm, has_private_key, changed_at, changed_by`

func scanVersion(row pgx.Row) (*Version, error) {
	var v Version
	err := row.Scan(&v.TenantID, &v.EntryID, &v.Version, &v.Action, &v.EntryVersion, &v.RestoredFrom, &v.Name,
		&v.Type, &v.Source, &v.Notes, &v.CertPath, &v.KeyPath, &v.Sealed.Cert, &v.Sealed.Key, &v.Sealed.KeyID,
		&v.Meta.FingerprintSHA256, &v.Meta.Subject, &v.Meta.Issuer, &v.Meta.SerialNumber, &v.Meta.NotBefore,
		&v.Meta.NotAfter, &v.Meta.DNSNames, &v.Meta.CertCount, &v.Meta.KeyAlgorithm, &v.Meta.HasPrivateKey,
		&v.ChangedAt, &v.ChangedBy)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func collectVersions(rows pgx.Rows, what string) ([]*Version, error) {
	defer rows.Close()
	out := []*Version{}
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, mapErr("scan version", err)
		}
		out = append(out, v)
	}
	return out, mapErr(what, rows.Err())
}

const lastVersionSQL = `SELECT coalesce(max(version), 0) FROM entry_versions WHERE tenant_id = $1 AND entry_id = $2`

// BeginEntryWrite starts a write of entry id in the caller's transaction, in one round
// trip: it moves the tenant's generation (taking the tenant's row lock first, as every
// write does), reads the entry for update, and reads the last version number of its
// history (0 when none). A missing entry is ErrNotFound, with the last version number
// still given (a deleted entry's history).
func BeginEntryWrite(ctx context.Context, q db.DBTX, tenant, id string) (*Entry, int64, error) {
	b := &pgx.Batch{}
	b.Queue(bumpGenerationSQL, tenant, GenerationChannel)
	b.Queue(`SELECT `+entryColumns+` FROM entries WHERE tenant_id = $1 AND id = $2 FOR UPDATE`, tenant, id)
	b.Queue(lastVersionSQL, tenant, id)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	var (
		gen, locked int64
		void        bool
		last        int64
	)
	if err := br.QueryRow().Scan(&gen, &void, &locked); err != nil {
		return nil, 0, mapErr("bump generation", err)
	}
	cur, err := scanEntry(br.QueryRow())
	missing := errors.Is(err, pgx.ErrNoRows)
	if err != nil && !missing {
		return nil, 0, mapErr("get entry "+id, err)
	}
	if err := br.QueryRow().Scan(&last); err != nil {
		return nil, 0, mapErr("read last version of "+id, err)
	}
	if err := br.Close(); err != nil {
		return nil, 0, mapErr("get entry "+id, err)
	}
	if missing {
		return nil, last, mapErr("get entry "+id, pgx.ErrNoRows)
	}
	return cur, last, nil
}

// LastVersion returns the highest version number of entry id's history (0 when it has
// none). The caller holds the tenant's row lock, so the next number is this plus one.
func LastVersion(ctx context.Context, q db.DBTX, tenant, id string) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, lastVersionSQL, tenant, id).Scan(&n)
	return n, mapErr("read last version of "+id, err)
}

// insertVersionSQL stores one history row and returns its time. A NULL version (see
// firstVersionSQL) fails the NOT NULL constraint.
const insertVersionSQL = `
		INSERT INTO entry_versions (tenant_id, entry_id, version, action, entry_version, restored_from, name, type,
			source, notes, cert_path, key_path, cert_sealed, key_sealed, key_id, fingerprint_sha256, subject,
			issuer, serial_number, not_before, not_after, dns_names, cert_count, key_algorithm, has_private_key,
			changed_by)
		VALUES ($1, $2, %s, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
			$22, $23, $24, $25, $26)
		RETURNING changed_at`

var (
	// nextVersionSQL inserts the version numbered by the caller.
	nextVersionSQL = fmt.Sprintf(insertVersionSQL, `$3`)
	// firstVersionSQL inserts version $3 (1) only when the entry ID has no history at
	// all; otherwise the version is NULL and the insert fails with not_null_violation.
	firstVersionSQL = fmt.Sprintf(insertVersionSQL, `(SELECT CASE WHEN EXISTS (
			SELECT 1 FROM entry_versions WHERE tenant_id = $1 AND entry_id = $2) THEN NULL ELSE $3::bigint END)`)
)

func insertVersionArgs(v *Version) []any {
	var restored any
	if v.RestoredFrom > 0 {
		restored = v.RestoredFrom
	}
	return []any{v.TenantID, v.EntryID, v.Version, v.Action, v.EntryVersion, restored, v.Name, v.Type, v.Source, v.Notes,
		nullIfEmpty(v.CertPath), nullIfEmpty(v.KeyPath), v.Sealed.Cert, v.Sealed.Key, nullIfEmpty(v.Sealed.KeyID),
		v.Meta.FingerprintSHA256, v.Meta.Subject, v.Meta.Issuer, v.Meta.SerialNumber, v.Meta.NotBefore,
		v.Meta.NotAfter, nonNil(v.Meta.DNSNames), v.Meta.CertCount, v.Meta.KeyAlgorithm, v.Meta.HasPrivateKey,
		v.ChangedBy}
}

// InsertVersion stores one history row and returns its time.
func InsertVersion(ctx context.Context, q db.DBTX, v *Version) error {
	err := q.QueryRow(ctx, nextVersionSQL, insertVersionArgs(v)...).Scan(&v.ChangedAt)
	return mapErr(fmt.Sprintf("insert version %d of %s", v.Version, v.EntryID), err)
}

// RecordVersion stores a history row and appends its audit record, in one round trip of
// the caller's transaction.
func RecordVersion(ctx context.Context, q db.DBTX, v *Version, r *AuditRecord) error {
	b := &pgx.Batch{}
	b.Queue(nextVersionSQL, insertVersionArgs(v)...).QueryRow(func(row pgx.Row) error { return row.Scan(&v.ChangedAt) })
	queueAudit(b, r)
	return mapErr(fmt.Sprintf("record version %d of %s", v.Version, v.EntryID), q.SendBatch(ctx, b).Close())
}

// ErrHasHistory means CreateEntryFirst met an entry ID that has history (a deleted
// entry's): nothing was stored, and the caller numbers the version itself.
var ErrHasHistory = errors.New("the entry ID has history")

// CreateEntryFirst stores a new entry of e.TenantID with version 1 of its history (v,
// sealed for version 1) and its audit record, moving the tenant's generation, in one
// round trip run by PostgreSQL as one implicit transaction, like CreateEntry. When the ID
// has history already nothing is stored and the error is ErrHasHistory.

func CreateEntryFirst(ctx context.Context, q db.DBTX, e *Entry, v *Version, r *AuditRecord) error {
	err := sendCreate(ctx, q, e, func(b *pgx.Batch) {
		b.Queue(firstVersionSQL, insertVersionArgs(v)...).QueryRow(func(row pgx.Row) error { return row.Scan(&v.ChangedAt) })
		queueAudit(b, r)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23502" && pgErr.TableName == "entry_versions" {
		return fmt.Errorf("insert entry %s: %w", e.ID, ErrHasHistory)
	}
	return mapErr("insert entry", err)
}

// GetVersion returns one version of entry id with its sealed material; ErrNotFound when
// the tenant has no such version.
func GetVersion(ctx context.Context, q db.DBTX, tenant, id string, version int64) (*Version, error) {
	v, err := scanVersion(q.QueryRow(ctx, `SELECT `+versionColumns+` FROM entry_versions
		WHERE tenant_id = $1 AND entry_id = $2 AND version = $3`, tenant, id, version))
	if err != nil {
		return nil, mapErr(fmt.Sprintf("get version %d of %s", version, id), err)
	}
	return v, nil
}

// VersionSummary is a version as a listing of an entry's history shows it: the change,
// who and when, and what tells one version's material from another's. It holds none of
// the sealed columns.
type VersionSummary struct {
	Version      int64
	Action       string
	EntryVersion int64
	// RestoredFrom is the version a restore brought back; 0 otherwise.
	RestoredFrom      int64
	ChangedAt         time.Time
	ChangedBy         string
	Name              string
	Type              material.Kind
	Source            string
	FingerprintSHA256 string
	NotAfter          time.Time
}

// listVersionsSQL pages an entry's history newest first, below version $3. It reads only
// the columns entry_versions_listing (migration 00009) holds, so a page is an index-only
// scan of adjacent index pages rather than a heap page per version, each heap row carrying
// sealed material too; TestListVersionsIsIndexOnly holds it to that.
const listVersionsSQL = `SELECT version, action, entry_version, coalesce(restored_from, 0), changed_at, changed_by,
		name, type, source, fingerprint_sha256, not_after
	FROM entry_versions
	WHERE tenant_id = $1 AND entry_id = $2 AND version < $3
	ORDER BY version DESC LIMIT $4`

// maxVersionsPage bounds what a listing allocates before it has seen its rows.
const maxVersionsPage = 1000

// ListVersionsScoped returns up to limit versions of entry id, newest first, older than
// before (0: from the newest), and whether more follow, in one round trip without a
// transaction of the caller's (the tenant scope and the query travel as one batch, as for
// ListEntriesScoped).
func ListVersionsScoped(ctx context.Context, q db.DBTX, tenant, id string, before int64, limit int) ([]VersionSummary, bool, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	var out []VersionSummary
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) error {
		var err error
		out, err = collectVersionSummaries(rows, min(limit+1, maxVersionsPage+1))
		return err
	}, listVersionsSQL, tenant, id, before, limit+1)
	if err != nil {
		return nil, false, mapErr("list versions of "+id, err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// collectVersionSummaries scans the rows of listVersionsSQL. Consecutive versions mostly
// repeat their text columns (the same name, actor and certificate), so each text column
// reuses the previous row's string when its bytes are the same: a page costs one
// allocation per distinct value rather than six per row.
func collectVersionSummaries(rows pgx.Rows, capacity int) ([]VersionSummary, error) {
	defer rows.Close()
	out := make([]VersionSummary, 0, capacity)
	var (
		cur                                   VersionSummary
		typ                                   string
		action, changedBy, name, kind, source = reusedText{dst: &cur.Action}, reusedText{dst: &cur.ChangedBy}, reusedText{dst: &cur.Name}, reusedText{dst: &typ}, reusedText{dst: &cur.Source}
		fingerprint                           = reusedText{dst: &cur.FingerprintSHA256}
	)
	dest := []any{&cur.Version, &action, &cur.EntryVersion, &cur.RestoredFrom, &cur.ChangedAt, &changedBy,
		&name, &kind, &source, &fingerprint, &cur.NotAfter}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, mapErr("scan version", err)
		}
		cur.Type = material.Kind(typ)
		out = append(out, cur)
	}
	return out, rows.Err()
}

// reusedText scans a NOT NULL text column into *dst, keeping the previous value's string
// when the bytes did not change (pgx hands a BytesScanner the column's bytes uncopied).
type reusedText struct {
	dst  *string
	last string
}

// ScanBytes implements pgtype.BytesScanner.
func (r *reusedText) ScanBytes(b []byte) error {
	if b == nil {
		return errors.New("cannot scan NULL into a text field")
	}
	if string(b) != r.last {
		r.last = string(b)
	}
	*r.dst = r.last
	return nil
}

// ExportVersions returns every version of the tenant with its sealed material, in (entry,
// version) order: for doctor.
func ExportVersions(ctx context.Context, q db.DBTX, tenant string) ([]*Version, error) {
	rows, err := q.Query(ctx, `SELECT `+versionColumns+` FROM entry_versions
		WHERE tenant_id = $1 ORDER BY entry_id, version`, tenant)
	if err != nil {
		return nil, mapErr("export versions", err)
	}
	return collectVersions(rows, "export versions")
}

// VersionsToRewrap locks and returns up to limit inline versions of tenant whose material
// is wrapped under another master key than keyID.
func VersionsToRewrap(ctx context.Context, q db.DBTX, tenant, keyID string, limit int) ([]*Version, error) {
	rows, err := q.Query(ctx, `SELECT `+versionColumns+` FROM entry_versions
		WHERE tenant_id = $1 AND key_id IS NOT NULL AND key_id <> $2
		ORDER BY entry_id, version LIMIT $3 FOR UPDATE`, tenant, keyID, limit)
	if err != nil {
		return nil, mapErr("select versions to rewrap", err)
	}
	return collectVersions(rows, "select versions to rewrap")
}

// RewrapVersions stores rewrapped material and its key ID for each version, in one round
// trip. Nothing else of a version ever changes.
func RewrapVersions(ctx context.Context, q db.DBTX, versions []*Version) error {
	b := &pgx.Batch{}
	for _, v := range versions {
		b.Queue(`UPDATE entry_versions SET cert_sealed = $4, key_sealed = $5, key_id = $6
			WHERE tenant_id = $1 AND entry_id = $2 AND version = $3`,
			v.TenantID, v.EntryID, v.Version, v.Sealed.Cert, v.Sealed.Key, v.Sealed.KeyID)
	}
	return execBatch(ctx, q, b, "rewrap versions")
}

// PruneVersions applies the retention to one tenant: each entry keeps its keep newest
// versions, and the whole history of an entry that no longer exists goes once its newest
// version is older than deletedBefore. It returns how many rows went.
func PruneVersions(ctx context.Context, q db.DBTX, tenant string, keep int, deletedBefore time.Time) (int64, error) {
	tag, err := q.Exec(ctx, `
		DELETE FROM entry_versions v
		USING (
			SELECT entry_id, max(version) AS last, max(changed_at) AS last_at
			FROM entry_versions WHERE tenant_id = $1 GROUP BY entry_id
		) h
		WHERE v.tenant_id = $1 AND v.entry_id = h.entry_id
		  AND (v.version <= h.last - $2
		       OR (h.last_at < $3 AND NOT EXISTS (
		           SELECT 1 FROM entries e WHERE e.tenant_id = $1 AND e.id = v.entry_id)))`,
		tenant, keep, deletedBefore)
	if err != nil {
		return 0, mapErr("prune versions", err)
	}
	return tag.RowsAffected(), nil
}

// ContinueEntryVersion moves a just-created entry's version past every version the ID had
// before (a deleted entry recreated), so an ETag or a cache keyed by (ID, version) never
// takes the new entry for the old one. It returns the entry's version.
func ContinueEntryVersion(ctx context.Context, q db.DBTX, tenant, id string, version int64) (int64, error) {
	err := q.QueryRow(ctx, `
		UPDATE entries e SET version = h.v + 1
		FROM (SELECT max(entry_version) AS v FROM entry_versions WHERE tenant_id = $1 AND entry_id = $2) h
		WHERE e.tenant_id = $1 AND e.id = $2 AND h.v >= e.version
		RETURNING e.version`, tenant, id).Scan(&version)
	if err == pgx.ErrNoRows {
		return version, nil
	}
	return version, mapErr("continue version of "+id, err)
}
