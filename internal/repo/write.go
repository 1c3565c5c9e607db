package repo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
)

// The column lists of an entry's row and of a version of its history share the metadata
// and the sealed material, always in this order.
const (
	// metaColumns are the columns of material.Metadata, in metaDest's order.
	metaColumns = `fingerprint_sha256, subject, issuer, serial_number, not_before, not_after, dns_names, cert_count,
	key_algorithm, has_private_key`
	// sealedColumns are the columns of sealing.Pair, in the order Cert, Key, KeyID.
	sealedColumns = `cert_sealed, key_sealed, key_id`
)

// metaDest is where a scan puts the metaColumns.
func metaDest(m *material.Metadata) []any {
	return []any{&m.FingerprintSHA256, &m.Subject, &m.Issuer, &m.SerialNumber, &m.NotBefore, &m.NotAfter,
		&m.DNSNames, &m.CertCount, &m.KeyAlgorithm, &m.HasPrivateKey}
}

// metaArgs are the values of the metaColumns.
func metaArgs(m *material.Metadata) []any {
	return []any{m.FingerprintSHA256, m.Subject, m.Issuer, m.SerialNumber, m.NotBefore, m.NotAfter,
		nonNil(m.DNSNames), m.CertCount, m.KeyAlgorithm, m.HasPrivateKey}
}

// params is "$from, $from+1, ..., $from+n-1".
func params(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}

// rowColumns are the columns an entry write sets, in rowArgs' order.
const rowColumns = `name, type, source, notes, cert_path, key_path, passphrase_path, ` + sealedColumns + `, ` + metaColumns

func rowArgs(e *Entry) []any {
	return append([]any{e.Name, e.Type, e.Source, e.Notes, nullIfEmpty(e.CertPath), nullIfEmpty(e.KeyPath),
		nullIfEmpty(e.PassphrasePath), e.Sealed.Cert, e.Sealed.Key, nullIfEmpty(e.Sealed.KeyID)}, metaArgs(&e.Meta)...)
}

const rowColumnCount = 20

var (
	// insertRowSQL stores a new entry at the version the caller gives (1, or past what a
	// deleted entry of the ID reached), with the creation and update times the caller gives
	// or now.
	insertRowSQL = `INSERT INTO entries (tenant_id, id, version, created_at, updated_at, ` + rowColumns + `)
		VALUES ($1, $2, $3, coalesce($4, now()), coalesce($5, $4, now()), ` + params(6, rowColumnCount) + `)
		RETURNING version, created_at, updated_at`
	// updateRowSQL writes every mutable column when the version is still $3, and moves it.
	updateRowSQL = `UPDATE entries SET (` + rowColumns + `) = (` + params(4, rowColumnCount) + `),
			version = version + 1, updated_at = now()
		WHERE tenant_id = $1 AND id = $2 AND version = $3
		RETURNING version, updated_at`
	// deleteRowSQL removes the entry when its version is still $3.
	deleteRowSQL = `DELETE FROM entries WHERE tenant_id = $1 AND id = $2 AND version = $3`
	// insertVersionSQL stores one version of an entry's history, numbered by the caller.
	insertVersionSQL = `INSERT INTO entry_versions (tenant_id, entry_id, version, action, entry_version, restored_from,
			name, type, source, notes, cert_path, key_path, ` + sealedColumns + `, ` + metaColumns + `, changed_by)
		VALUES (` + params(1, 26) + `)
		RETURNING changed_at`
)

func insertVersionArgs(v *Version) []any {
	var restored any
	if v.RestoredFrom > 0 {
		restored = v.RestoredFrom
	}
	args := []any{v.TenantID, v.EntryID, v.Version, v.Action, v.EntryVersion, restored, v.Name, v.Type, v.Source, v.Notes,
		nullIfEmpty(v.CertPath), nullIfEmpty(v.KeyPath), v.Sealed.Cert, v.Sealed.Key, nullIfEmpty(v.Sealed.KeyID)}
	return append(append(args, metaArgs(&v.Meta)...), v.ChangedBy)
}

// History is where an entry ID's history stands: its last version number and the last
// entry version (ETag) a version recorded; both 0 when the ID has none.
type History struct {
	Last, LastEntryVersion int64
}

// historySQL reads each ID's history as its own descent of the primary key (tenant_id,
// entry_id, version): an equality on both columns is an index condition whatever the
// statistics say. `entry_id = ANY($2)` was not: a generic plan made while a tenant's rows
// were still uncounted (a table analyzed before the tenant's writes began) scanned the
// whole tenant for every create, filtering on the ID, since the planner costs an array
// condition as one descent per element.
const historySQL = `SELECT i.id, h.last, h.last_entry_version
	FROM unnest($2::text[]) AS i(id)
	CROSS JOIN LATERAL (SELECT max(version) AS last, max(entry_version) AS last_entry_version
		FROM entry_versions WHERE tenant_id = $1 AND entry_id = i.id) h
	WHERE h.last IS NOT NULL`

// Histories returns where the history of each of ids stands (an ID without history is
// absent from the map). It scopes itself (see scopedQuery): one round trip from a pool.
func Histories(ctx context.Context, q db.DBTX, tenant string, ids []string) (map[string]History, error) {
	out := make(map[string]History, len(ids))
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var id string
			var h History
			if err := rows.Scan(&id, &h.Last, &h.LastEntryVersion); err != nil {
				return err
			}
			out[id] = h
		}
		return rows.Err()
	}, historySQL, tenant, ids)
	return out, mapErr("read history", err)
}

// ErrVersionTaken means a version of the entry's history was written by another writer
// between the read of its History and this write: the write changed nothing, and a create
// may read the history again and retry.
var ErrVersionTaken = errors.New("the entry's history moved meanwhile")

// EntryWrite is one write of an entry as the catalogue makes it: the row before and
// after, the versions it adds to the history and its audit record, all for one tenant.
type EntryWrite struct {
	// Row is the entry after the write, nil for a delete. A new row (Before nil) is
	// inserted at Row.Version; an existing one is updated, its version moving by one.
	// Either way Row gets what the database assigns (version, times).
	Row *Entry
	// Before is the entry as its writer locked it; nil for a create. An update or a delete
	// applies only while the row is still at Before.Version (ErrVersionMismatch).
	Before *Entry
	// Versions are the history rows the write adds, oldest first: a baseline of an entry
	// older than history, then the version of the change.
	Versions []*Version
	// Audit is the write's audit record.
	Audit *AuditRecord
}

// WriteEntries applies writes of tenant's entries in one round trip. With create set the
// batch runs outside any transaction of the caller, on a pool: it is scoped to the tenant,
// records one change of the tenant's generation per write (with its notification) and runs
// as one implicit transaction, locking nothing another create waits for (see sendCreate).
// Without it q is the caller's transaction, which took the tenant's lock and moved its
// generation already (BeginEntryWrite, BumpGeneration, RaiseGeneration).
func WriteEntries(ctx context.Context, q db.DBTX, tenant string, create bool, writes []EntryWrite) error {
	fill := func(b *pgx.Batch) {
		for _, w := range writes {
			if create {
				b.Queue(changeSQL, tenant, GenerationChannel)
			}
			queueEntryWrite(b, tenant, w)
		}
	}
	var err error
	if create {
		err = sendTenantBatch(ctx, q, tenant, fill)
	} else {
		b := &pgx.Batch{}
		fill(b)
		err = q.SendBatch(ctx, b).Close()
	}
	return writeErr(err)
}

func queueEntryWrite(b *pgx.Batch, tenant string, w EntryWrite) {
	switch {
	case w.Before == nil:
		e := w.Row
		var created, updated any
		if !e.CreatedAt.IsZero() {
			created = e.CreatedAt
		}
		if !e.UpdatedAt.IsZero() {
			updated = e.UpdatedAt
		}
		args := append([]any{tenant, e.ID, e.Version, created, updated}, rowArgs(e)...)
		b.Queue(insertRowSQL, args...).QueryRow(func(row pgx.Row) error {
			return row.Scan(&e.Version, &e.CreatedAt, &e.UpdatedAt)
		})
	case w.Row != nil:
		e := w.Row
		args := append([]any{tenant, e.ID, w.Before.Version}, rowArgs(e)...)
		b.Queue(updateRowSQL, args...).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&e.Version, &e.UpdatedAt)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("update entry %s: %w", e.ID, ErrVersionMismatch)
			}
			return err
		})
	default:
		id := w.Before.ID
		b.Queue(deleteRowSQL, tenant, id, w.Before.Version).Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("delete entry %s: %w", id, ErrVersionMismatch)
			}
			return nil
		})
	}
	for _, v := range w.Versions {
		b.Queue(insertVersionSQL, insertVersionArgs(v)...).QueryRow(func(row pgx.Row) error { return row.Scan(&v.ChangedAt) })
	}
	if w.Audit != nil {
		queueAudit(b, w.Audit)
	}
}

// writeErr maps the error of an entry write: a version number taken meanwhile is
// ErrVersionTaken, the rest as mapErr does.
func writeErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.TableName == "entry_versions" {
		return fmt.Errorf("write entry: %w", ErrVersionTaken)
	}
	if errors.Is(err, ErrVersionMismatch) {
		return err
	}
	return mapErr("write entry", err)
}
