package repo

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// AuditRecord is one row of a tenant's audit trail. Hash chains it to the previous
// record: HMAC-SHA-256 under the tenant's audit key of version KeyVersion, or SHA-256
// when KeyVersion is 0, of PrevHash || Seq as 8 big-endian bytes || canonical bytes; see
// internal/audit for the canonical encoding.
type AuditRecord struct {
	TenantID          string
	Seq               int64
	At                time.Time
	Subject           string
	Role              string
	Action            string
	Target            string
	FingerprintBefore string
	FingerprintAfter  string
	RequestID         string
	ClientAddr        string
	// Detail is a JSON object, stored and hashed as these exact bytes.
	Detail   string
	PrevHash []byte
	Hash     []byte
	// KeyVersion is the version of the audit key Hash is a MAC under; 0 (NULL in the
	// table) for a record chained by plain SHA-256.
	KeyVersion int
}

// appendAuditSQL stores a record in audit_pending, in the caller's transaction: it locks
// nothing another writer waits for. ChainPendingAudit later numbers, hashes and moves it
// into audit_log under the lock of the tenant's head, so the chain never forks.
const appendAuditSQL = `
		INSERT INTO audit_pending (tenant_id, at, subject, role, action, target, fingerprint_before,
			fingerprint_after, request_id, client_addr, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`

func appendAuditArgs(r *AuditRecord) []any {
	return []any{r.TenantID, r.At, r.Subject, r.Role, r.Action, r.Target, r.FingerprintBefore,
		r.FingerprintAfter, r.RequestID, r.ClientAddr, r.Detail}
}

// AppendAudit stores a record for its tenant's chain in the caller's transaction. It is
// numbered and hashed when chained (ChainPendingAudit); r's Seq and hashes stay unset.
func AppendAudit(ctx context.Context, q db.DBTX, r *AuditRecord) error {
	_, err := q.Exec(ctx, appendAuditSQL, appendAuditArgs(r)...)
	return mapErr("append audit record", err)
}

// AppendAuditAlone stores a record in a transaction of its own, in one round trip (the
// tenant scope and the record travel as one batch, which PostgreSQL runs as one implicit
// transaction); a tenant without a row yet gets one, in a second round trip.
func AppendAuditAlone(ctx context.Context, q db.DBTX, r *AuditRecord) error {
	err := sendTenantBatch(ctx, q, r.TenantID, func(b *pgx.Batch) { queueAudit(b, r) })
	return mapErr("append audit record", err)
}

// queueAudit adds AppendAudit to a batch.
func queueAudit(b *pgx.Batch, r *AuditRecord) {
	b.Queue(appendAuditSQL, appendAuditArgs(r)...)
}

// HasPendingAudit reports whether the tenant has records not chained yet. It scopes
// itself (see scopedQuery): one round trip from a pool.
func HasPendingAudit(ctx context.Context, q db.DBTX, tenant string) (bool, error) {
	var has bool
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) error {
		var err error
		has, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
		return err
	}, `SELECT EXISTS (SELECT 1 FROM audit_pending WHERE tenant_id = $1)`, tenant)
	return has, mapErr("look for pending audit records", err)
}

// takePendingAuditSQL deletes the tenant's pending records and returns them in the order
// they were stored, in auditSelect's shape (for scanAudit; chaining fills in the rest).
const takePendingAuditSQL = `WITH d AS (DELETE FROM audit_pending WHERE tenant_id = $1 RETURNING *)
	SELECT tenant_id, 0::bigint, at, subject, role, action, target, fingerprint_before, fingerprint_after,
		request_id, client_addr, detail, NULL::bytea, NULL::bytea, 0 FROM d ORDER BY id`

// AuditLink is a record as the next one is chained after it: its sequence number, hash
// and key version. The link before a tenant's first record is record 0, 32 zero bytes.
type AuditLink struct {
	Seq        int64
	Hash       []byte
	KeyVersion int
}

// ChainPendingAudit moves the tenant's pending records into its chain, in the caller's
// transaction (scoped to the tenant), in two round trips: it locks the tenant's head
// (creating it at record 0 when missing), reads the key version of the record there, and
// takes every pending record in the order it was stored; link is given each one numbered
// after the last, with its PrevHash set, and the link it follows, and sets its Hash and
// KeyVersion (or fails, and nothing is chained); then the records and the new head are
// stored. Chainers of one tenant queue on its head; the writers that stored the records
// never do. It returns how many records it chained.
func ChainPendingAudit(ctx context.Context, tx pgx.Tx, tenant string, link func(prev AuditLink, r *AuditRecord) error) (int, error) {
	var (
		prev AuditLink
		recs []*AuditRecord
	)
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO audit_heads (tenant_id, seq, prev_hash, hash)
		VALUES ($1, 0, $2, $2) ON CONFLICT (tenant_id) DO NOTHING`, tenant, make([]byte, 32))
	b.Queue(`SELECT h.seq, h.hash, COALESCE(l.key_version, 0) FROM audit_heads h
		LEFT JOIN audit_log l ON l.tenant_id = h.tenant_id AND l.seq = h.seq
		WHERE h.tenant_id = $1 FOR UPDATE OF h`, tenant).QueryRow(func(row pgx.Row) error {
		return row.Scan(&prev.Seq, &prev.Hash, &prev.KeyVersion)
	})
	b.Queue(takePendingAuditSQL, tenant).Query(func(rows pgx.Rows) (err error) {
		recs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*AuditRecord, error) { return scanAudit(row) })
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, mapErr("take pending audit records", err)
	}
	if len(recs) == 0 {
		return 0, nil
	}
	b = &pgx.Batch{}
	for _, r := range recs {
		r.Seq, r.PrevHash = prev.Seq+1, prev.Hash
		if err := link(prev, r); err != nil {
			return 0, err
		}
		prev = AuditLink{Seq: r.Seq, Hash: r.Hash, KeyVersion: r.KeyVersion}
		b.Queue(`INSERT INTO audit_log (`+auditColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULLIF($15, 0))`,
			r.TenantID, r.Seq, r.At, r.Subject, r.Role, r.Action, r.Target, r.FingerprintBefore, r.FingerprintAfter,
			r.RequestID, r.ClientAddr, r.Detail, r.PrevHash, r.Hash, r.KeyVersion)
	}
	last := recs[len(recs)-1]
	b.Queue(`UPDATE audit_heads SET seq = $2, prev_hash = $3, hash = $4 WHERE tenant_id = $1`,
		tenant, last.Seq, last.PrevHash, last.Hash)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, mapErr("chain audit records", err)
	}
	return len(recs), nil
}

// auditColumns are the columns of audit_log in AuditRecord's order; auditSelect reads them
// for scanAudit, with a NULL key version as 0.
const (
	auditColumns = `tenant_id, seq, at, subject, role, action, target, fingerprint_before, fingerprint_after,
	request_id, client_addr, detail, prev_hash, hash, key_version`
	auditSelect = `tenant_id, seq, at, subject, role, action, target, fingerprint_before, fingerprint_after,
	request_id, client_addr, detail, prev_hash, hash, COALESCE(key_version, 0)`
)

func scanAudit(row pgx.Row) (*AuditRecord, error) {
	var r AuditRecord
	err := row.Scan(&r.TenantID, &r.Seq, &r.At, &r.Subject, &r.Role, &r.Action, &r.Target, &r.FingerprintBefore,
		&r.FingerprintAfter, &r.RequestID, &r.ClientAddr, &r.Detail, &r.PrevHash, &r.Hash, &r.KeyVersion)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// AuditFilter narrows a listing of the audit trail; zero fields apply no filter.
type AuditFilter struct {
	Action  string
	Target  string
	Subject string
	Since   *time.Time // at >= Since
	Until   *time.Time // at < Until
	// Before is the cursor: only records with a lower sequence number.
	Before int64
	Limit  int
}

// ListAudit returns up to f.Limit records of tenant, newest first, and whether more follow.
func ListAudit(ctx context.Context, q db.DBTX, tenant string, f AuditFilter) ([]*AuditRecord, bool, error) {
	where, args := []string{"tenant_id = $1"}, []any{tenant}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Action != "" {
		add("action = $%d", f.Action)
	}
	if f.Target != "" {
		add("target = $%d", f.Target)
	}
	if f.Subject != "" {
		add("subject = $%d", f.Subject)
	}
	if f.Since != nil {
		add("at >= $%d", *f.Since)
	}
	if f.Until != nil {
		add("at < $%d", *f.Until)
	}
	if f.Before > 0 {
		add("seq < $%d", f.Before)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit+1)
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT %s FROM audit_log WHERE %s ORDER BY seq DESC LIMIT $%d`,
		auditSelect, strings.Join(where, " AND "), len(args)), args...)
	if err != nil {
		return nil, false, mapErr("list audit records", err)
	}
	defer rows.Close()
	out := []*AuditRecord{}
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, false, mapErr("scan audit record", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr("list audit records", err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// ScanAudit calls fn for every record of tenant in chain order (ascending sequence
// number), stopping at fn's first error.
func ScanAudit(ctx context.Context, q db.DBTX, tenant string, fn func(*AuditRecord) error) error {
	rows, err := q.Query(ctx, `SELECT `+auditSelect+` FROM audit_log WHERE tenant_id = $1 ORDER BY seq`, tenant)
	if err != nil {
		return mapErr("read audit records", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return mapErr("scan audit record", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return mapErr("read audit records", rows.Err())
}

// AuditHead returns the tenant's last sequence number and hash (0 and nil before the
// first record).
func AuditHead(ctx context.Context, q db.DBTX, tenant string) (int64, []byte, error) {
	var (
		seq  int64
		hash []byte
	)
	err := q.QueryRow(ctx, `SELECT seq, hash FROM audit_heads WHERE tenant_id = $1`, tenant).Scan(&seq, &hash)
	if err == pgx.ErrNoRows {
		return 0, nil, nil
	}
	return seq, hash, mapErr("read audit head", err)
}

// AuditPosition is where a tenant's trail ends, as a checkpoint of it is taken: the head
// row (Seq 0 and a nil Hash without one; its KeyVersion is unset), the record at the
// head's sequence number, and the record at a sequence number the caller names.
type AuditPosition struct {
	Head AuditLink
	// AtHead is the record at Head.Seq as audit_log holds it; nil when there is none.
	AtHead *AuditLink
	// At is the record at the sequence number asked for; nil when there is none.
	At *AuditLink
}

// ReadAuditPosition reads the tenant's AuditPosition with the record at seq at, in one
// round trip. It scopes itself (see scopedQuery), so it runs from a pool or inside the
// caller's transaction.
func ReadAuditPosition(ctx context.Context, q db.DBTX, tenant string, at int64) (AuditPosition, error) {
	var (
		p              AuditPosition
		headHash       []byte
		topHash, xHash []byte
		topKV, xKV     int
	)
	err := scopedQuery(ctx, q, tenant, func(rows pgx.Rows) error {
		if !rows.Next() {
			if err := rows.Err(); err != nil {
				return err
			}
			return pgx.ErrNoRows
		}
		if err := rows.Scan(&p.Head.Seq, &headHash, &topHash, &topKV, &xHash, &xKV); err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}, `WITH h AS (SELECT seq, hash FROM audit_heads WHERE tenant_id = $1)
		SELECT COALESCE((SELECT seq FROM h), 0), (SELECT hash FROM h), l.hash, COALESCE(l.key_version, 0),
			c.hash, COALESCE(c.key_version, 0)
		FROM (SELECT 1) AS one
		LEFT JOIN audit_log l ON l.tenant_id = $1 AND l.seq = (SELECT seq FROM h)
		LEFT JOIN audit_log c ON c.tenant_id = $1 AND c.seq = $2`, tenant, at)
	if err != nil {
		return p, mapErr("read audit position", err)
	}
	p.Head.Hash = headHash
	if topHash != nil {
		p.AtHead = &AuditLink{Seq: p.Head.Seq, Hash: topHash, KeyVersion: topKV}
	}
	if xHash != nil {
		p.At = &AuditLink{Seq: at, Hash: xHash, KeyVersion: xKV}
	}
	return p, nil
}
