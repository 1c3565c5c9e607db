package repo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

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
	` + metaColumns + `, changed_at, changed_by`

func scanVersion(row pgx.Row) (*Version, error) {
	var v Version
	dest := []any{&v.TenantID, &v.EntryID, &v.Version, &v.Action, &v.EntryVersion, &v.RestoredFrom, &v.Name,
		&v.Type, &v.Source, &v.Notes, &v.CertPath, &v.KeyPath, &v.Sealed.Cert, &v.Sealed.Key, &v.Sealed.KeyID}
	err := row.Scan(append(append(dest, metaDest(&v.Meta)...), &v.ChangedAt, &v.ChangedBy)...)
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

const lastVersionSQL = `SELECT coalesce(max(version), 0), coalesce(max(entry_version), 0) FROM entry_versions WHERE tenant_id = $1 AND entry_id = $2`

// BeginEntryWrite starts a write of entry id in the caller's transaction, in one round
// trip: it moves the tenant's generation (taking the tenant's row lock first, as every
// write but a create does), reads the entry for update, and reads where its history
// stands. A missing entry is ErrNotFound, with the history still given (a deleted
// entry's).
func BeginEntryWrite(ctx context.Context, q db.DBTX, tenant, id string) (*Entry, History, error) {
	b := &pgx.Batch{}
	b.Queue(bumpGenerationSQL, tenant, GenerationChannel)
	b.Queue(`SELECT `+entryColumns+` FROM entries WHERE tenant_id = $1 AND id = $2 FOR UPDATE`, tenant, id)
	b.Queue(lastVersionSQL, tenant, id)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	var (
		gen, locked int64
		void        bool
		h           History
	)
	if err := br.QueryRow().Scan(&gen, &void, &locked); err != nil {
		return nil, h, mapErr("bump generation", err)
	}
	cur, err := scanEntry(br.QueryRow())
	missing := errors.Is(err, pgx.ErrNoRows)
	if err != nil && !missing {
		return nil, h, mapErr("get entry "+id, err)
	}
	if err := br.QueryRow().Scan(&h.Last, &h.LastEntryVersion); err != nil {
		return nil, h, mapErr("read the history of "+id, err)
	}
	if err := br.Close(); err != nil {
		return nil, h, mapErr("get entry "+id, err)
	}
	if missing {
		return nil, h, mapErr("get entry "+id, pgx.ErrNoRows)
	}
	return cur, h, nil
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
