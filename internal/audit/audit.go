// Package audit owns the tamper-evident audit trail: who did what to which target of a
// tenant, recorded in the same transaction as the change (or, for a refused operation, in
// a small transaction of its own after the refusal). Records form one chain per tenant,
// linked by HMAC-SHA-256 under the tenant's audit key (Keys), which the database never
// holds, or by plain SHA-256 for records chained without one; the chain's head is
// checkpointed outside the database (Checkpoint). Verify walks every chain, checks it
// against the checkpoints, and names the first broken link. The actor reaches domain code
// through the context (WithActor), so no HTTP type travels below the API. Records never
// hold PEM, keys or credential values: only names, IDs and fingerprints.
package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
)

// Actions recorded.
const (
	EntryCreate            = "entry.create"
	EntryUpdate            = "entry.update"
	EntryDelete            = "entry.delete"
	EntryRestore           = "entry.restore"
	EntryDeleteRefused     = "entry.delete.refused"
	WorkspaceDeploy        = "workspace.deploy"
	WorkspaceDeployRefused = "workspace.deploy.refused"
	NodeCredentials        = "node.credentials"
	TenantImport           = "tenant.import"
	KeyRotate              = "key.rotate"
)

// Actions lists every action, for the API's filter.
var Actions = []string{EntryCreate, EntryUpdate, EntryDelete, EntryRestore, EntryDeleteRefused,
	WorkspaceDeploy, WorkspaceDeployRefused, NodeCredentials, TenantImport, KeyRotate}

// Actor is who makes a change: the token's subject and role for API calls, the command
// for operator subcommands, with the request id and client address when there is one.
type Actor struct {
	Subject    string
	Role       string
	RequestID  string
	ClientAddr string
}

type actorKey struct{}

// WithActor returns ctx carrying a.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries; the zero Actor when none.
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}

// Event is what a write reports; the actor and time are added by Record.
type Event struct {
	Tenant string
	Action string
	// Target names what changed: "entry:<id>", "workspace", "node:<id>", "tenant".
	Target            string
	FingerprintBefore string
	FingerprintAfter  string
	// Detail holds counts and names, never values; nil is {}.
	Detail map[string]any
}

// EntryTarget is the target of an entry's records.
func EntryTarget(id string) string { return "entry:" + id }

// NodeTarget is the target of a node's records.
func NodeTarget(id string) string { return "node:" + id }

// Record stores ev for its tenant's chain in the caller's transaction (scoped to the
// tenant), stamped with the context's actor and the current time. The record commits with
// the write it describes; it is numbered and hashed into the chain after (see Chain).
func Record(ctx context.Context, q db.DBTX, ev Event) error {
	r, err := Prepare(ctx, ev)
	if err != nil {
		return err
	}
	if err := repo.AppendAudit(ctx, q, r); err != nil {
		return fmt.Errorf("record %s of %s: %w", ev.Action, ev.Target, err)
	}
	return nil
}

// Prepare builds ev's record (actor from ctx, the current time), for callers that append
// it in a batch of their own (repo.RecordVersion).
func Prepare(ctx context.Context, ev Event) (*repo.AuditRecord, error) {
	a := ActorFrom(ctx)
	detail := []byte("{}")
	if len(ev.Detail) > 0 {
		var err error
		if detail, err = json.Marshal(ev.Detail); err != nil {
			return nil, fmt.Errorf("encode audit detail: %w", err)
		}
	}
	r := &repo.AuditRecord{
		TenantID: ev.Tenant, At: time.Now().UTC().Truncate(time.Microsecond),
		Subject: a.Subject, Role: a.Role, Action: ev.Action, Target: ev.Target,
		FingerprintBefore: ev.FingerprintBefore, FingerprintAfter: ev.FingerprintAfter,
		RequestID: a.RequestID, ClientAddr: a.ClientAddr, Detail: string(detail),
	}
	return r, nil
}

// RecordAlone records ev in a transaction of its own: for refused operations, whose own
// transaction rolled back. The tenant row is created when missing (a refused first deploy).
// It travels as one batch, one round trip, and like every record it waits for no other
// writer: it is chained later (see Chain).
func RecordAlone(ctx context.Context, pool *pgxpool.Pool, ev Event) error {
	r, err := Prepare(ctx, ev)
	if err != nil {
		return err
	}
	if err := repo.AppendAuditAlone(ctx, pool, r); err != nil {
		return fmt.Errorf("record %s of %s: %w", ev.Action, ev.Target, err)
	}
	return nil
}

// canonicalMagic opens every record's canonical bytes, naming the encoding's version.
const canonicalMagic = "loopze-audit-v1\n"

// TimeLayout is how a record's time enters its canonical bytes: UTC, microseconds.
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// Canonical returns a record's canonical bytes: canonicalMagic, then each of tenant,
// time (TimeLayout), subject, role, action, target, fingerprint before, fingerprint after,
// request id, client address and detail (its stored JSON text) as a 4-byte big-endian
// length and the UTF-8 bytes. The sequence number and previous hash are not part of them:
// they enter the hash directly (see Hash).
func Canonical(r *repo.AuditRecord) []byte {
	var b bytes.Buffer
	b.WriteString(canonicalMagic)
	for _, f := range []string{r.TenantID, r.At.UTC().Format(TimeLayout), r.Subject, r.Role, r.Action, r.Target,
		r.FingerprintBefore, r.FingerprintAfter, r.RequestID, r.ClientAddr, r.Detail} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		b.Write(n[:])
		b.WriteString(f)
	}
	return b.Bytes()
}

// Hash is the chain hash of a record chained without a key (by earlier releases, or by a
// server given no Keys): SHA-256(prev || seq as 8 big-endian bytes || canonical).
func Hash(prev []byte, seq int64, canonical []byte) []byte {
	return link(sha256.New(), prev, seq, canonical)
}

// MAC is the chain hash of a record chained under a tenant's audit key:
// HMAC-SHA-256(key, prev || seq as 8 big-endian bytes || canonical), the bytes Hash hashes.
func MAC(key, prev []byte, seq int64, canonical []byte) []byte {
	return link(hmac.New(sha256.New, key), prev, seq, canonical)
}

// chainHash is MAC under key, or Hash when key is nil.
func chainHash(key, prev []byte, seq int64, canonical []byte) []byte {
	if key == nil {
		return Hash(prev, seq, canonical)
	}
	return MAC(key, prev, seq, canonical)
}

func link(h hash.Hash, prev []byte, seq int64, canonical []byte) []byte {
	h.Write(prev)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(seq))
	h.Write(n[:])
	h.Write(canonical)
	return h.Sum(nil)
}

// ZeroHash is the previous hash of a tenant's first record.
var ZeroHash = make([]byte, sha256.Size)
