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
// record: SHA-256(PrevHash || Seq as 8 big-endian bytes || canonical bytes); see
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
}

// appendAuditSQL appends a record to its tenant's chain. The upsert of the tenant's audit
// head assigns the sequence number and computes the hash in the database, so concurrent
// writers of one tenant queue on the head row and the chain never forks, whatever other
// locks they hold. $3 is the record's canonical bytes.
const appendAuditSQL = `
		WITH head AS (
			INSERT INTO audit_heads AS h (tenant_id, seq, prev_hash, hash)
			VALUES ($1, 1, $2::bytea, sha256($2::bytea || int8send(1::bigint) || $3::bytea))
			ON CONFLICT (tenant_id) DO UPDATE
				SET seq = h.seq + 1, prev_hash = h.hash, hash = sha256(h.hash || int8send(h.seq + 1) || $3::bytea)
			RETURNING seq, prev_hash, hash)
		INSERT INTO audit_log (tenant_id, seq, at, subject, role, action, target, fingerprint_before,
			fingerprint_after, request_id, client_addr, detail, prev_hash, hash)
		SELECT $1, head.seq, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, head.prev_hash, head.hash FROM head
		RETURNING seq, prev_hash, hash`

func appendAuditArgs(r *AuditRecord, body []byte) []any {
	return []any{r.TenantID, make([]byte, 32), body, r.At, r.Subject, r.Role, r.Action, r.Target, r.FingerprintBefore,
		r.FingerprintAfter, r.RequestID, r.ClientAddr, r.Detail}
}

// AppendAudit appends a record to its tenant's chain and fills in its sequence number and
// hashes. body is the record's canonical bytes.
func AppendAudit(ctx context.Context, q db.DBTX, r *AuditRecord, body []byte) error {
	err := q.QueryRow(ctx, appendAuditSQL, appendAuditArgs(r, body)...).Scan(&r.Seq, &r.PrevHash, &r.Hash)
	return mapErr("append audit record", err)
}

// AppendAuditAlone appends a record in a transaction of its own, in one round trip (the
// tenant scope and the record travel as one batch, which PostgreSQL runs as one implicit
// transaction); a tenant without a row yet gets one, in a second round trip.
func AppendAuditAlone(ctx context.Context, q db.DBTX, r *AuditRecord, body []byte) error {
	send := func(ensure bool) error {
		b := db.TenantBatch(r.TenantID)
		if ensure {
			b.Queue(ensureTenantSQL, r.TenantID)
		}
		queueAudit(b, r, body)
		return q.SendBatch(ctx, b).Close()
	}
	err := send(false)
	if missingTenant(err) {
		err = send(true)
	}
	return mapErr("append audit record", err)
}

// queueAudit adds AppendAudit to a batch.
func queueAudit(b *pgx.Batch, r *AuditRecord, body []byte) {
	b.Queue(appendAuditSQL, appendAuditArgs(r, body)...).QueryRow(func(row pgx.Row) error {
		return row.Scan(&r.Seq, &r.PrevHash, &r.Hash)
	})
}

const auditColumns = `tenant_id, seq, at, subject, role, action, target, fingerprint_before, fingerprint_after,
	request_id, client_addr, detail, prev_hash, hash`

func scanAudit(row pgx.Row) (*AuditRecord, error) {
	var r AuditRecord
	err := row.Scan(&r.TenantID, &r.Seq, &r.At, &r.Subject, &r.Role, &r.Action, &r.Target, &r.FingerprintBefore,
		&r.FingerprintAfter, &r.RequestID, &r.ClientAddr, &r.Detail, &r.PrevHash, &r.Hash)
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
		auditColumns, strings.Join(where, " AND "), len(args)), args...)
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
	rows, err := q.Query(ctx, `SELECT `+auditColumns+` FROM audit_log WHERE tenant_id = $1 ORDER BY seq`, tenant)
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

// EnsureTenant creates the tenant's row when it has none, without moving its generation:
// the audit record of a refused first deploy needs a tenant to belong to.
func EnsureTenant(ctx context.Context, q db.DBTX, tenant string) error {
	_, err := q.Exec(ctx, ensureTenantSQL, tenant)
	return mapErr("ensure tenant", err)
}
