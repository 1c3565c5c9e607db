package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
)

// ErrBroken means a tenant's chain does not verify; it wraps every *BrokenLinkError.
var ErrBroken = errors.New("audit chain is broken")

// BrokenLinkError names the first record of a tenant's chain that does not verify.
type BrokenLinkError struct {
	Tenant string
	Seq    int64
	Reason string
}

func (e *BrokenLinkError) Error() string {
	return fmt.Sprintf("tenant %s: audit record %d: %s", e.Tenant, e.Seq, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBroken) true.
func (e *BrokenLinkError) Unwrap() error { return ErrBroken }

// Service reads the audit trail.
type Service struct {
	Pool *pgxpool.Pool
	// Keys gives the tenants' audit keys, to chain pending records before a read (see
	// Chain) and to verify keyed records; nil chains by plain SHA-256 and cannot verify
	// keyed records.
	Keys Keys
}

// TenantResult is one tenant's verified chain.
type TenantResult struct {
	Tenant  string
	Records int64
	// Keyed counts the records chained under an audit key (the others by plain SHA-256).
	Keyed int64
	// Checkpoint is the highest sequence number of a checkpoint the trail was checked
	// against; 0 when none was.
	Checkpoint int64
	// Broken is the first broken link; nil when the chain verifies.
	Broken *BrokenLinkError
}

// Verify verifies the trail of every tenant of the database and of every checkpoint (see
// VerifyTenant), each against its own checkpoints.
// The error is a *BrokenLinkError (for the first tenant with one) or another failure.
func (s *Service) Verify(ctx context.Context, checkpoints ...Checkpoint) ([]TenantResult, error) {
	tenants, err := repo.ListTenants(ctx, s.Pool)
	if err != nil {
		return nil, fmt.Errorf("verify audit trail: %w", err)
	}
	names := make([]string, 0, len(tenants))
	for _, t := range tenants {
		names = append(names, t.ID)
	}
	// A tenant removed from the database keeps its checkpoints: its trail must still be
	// there.
	for _, cp := range checkpoints {
		if !slices.Contains(names, cp.Tenant) {
			names = append(names, cp.Tenant)
		}
	}
	slices.Sort(names)
	var (
		out   []TenantResult
		first error
	)
	for _, tenant := range names {
		res, err := s.VerifyTenant(ctx, tenant, checkpoints...)
		if err != nil && !errors.Is(err, ErrBroken) {
			return out, err
		}
		out = append(out, res)
		if err != nil && first == nil {
			first = err
		}
	}
	return out, first
}

// VerifyTenant chains what is pending (see Chain), then walks the tenant's chain from its
// first record: sequence numbers without gaps from 1; each record's previous hash equal to
// the hash before it; each hash recomputed from the record's canonical bytes, as a MAC
// under the key of its version for a keyed record, by SHA-256 for the others, which may
// not follow a keyed one; the chain ending where the tenant's head says; and, for each of
// checkpoints that is the tenant's, the record at its sequence number present with its
// hash and key version. Checkpoints of other tenants are ignored, so one list serves all.
// The error is a *BrokenLinkError naming the first record that fails, or another failure
// (the database, or Keys, failed; or a keyed record met nil Keys: ErrNoKeys).
func (s *Service) VerifyTenant(ctx context.Context, tenant string, checkpoints ...Checkpoint) (TenantResult, error) {
	res := TenantResult{Tenant: tenant}
	var mine []Checkpoint
	for _, cp := range checkpoints {
		if cp.Tenant == tenant && cp.Seq > 0 {
			mine = append(mine, cp)
			res.Checkpoint = max(res.Checkpoint, cp.Seq)
		}
	}
	if _, err := Chain(ctx, s.Pool, s.Keys, tenant); err != nil {
		return res, err
	}
	ring := &keyRing{keys: s.Keys, tenant: tenant}
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		var (
			prev  = ZeroHash
			want  = int64(1)
			keyed *repo.AuditRecord // the last keyed record so far
		)
		err := repo.ScanAudit(ctx, tx, tenant, func(r *repo.AuditRecord) error {
			broken := func(format string, args ...any) error {
				res.Broken = &BrokenLinkError{Tenant: tenant, Seq: r.Seq, Reason: fmt.Sprintf(format, args...)}
				return res.Broken
			}
			switch {
			case r.Seq != want:
				return broken("expected record %d here: record(s) %d to %d are missing", want, want, r.Seq-1)
			case !bytes.Equal(r.PrevHash, prev):
				return broken("its previous hash %x is not the hash of record %d (%x)", r.PrevHash, r.Seq-1, prev)
			case r.KeyVersion == 0 && keyed != nil:
				return broken("it is chained without a key after record %d was chained under audit key version %d",
					keyed.Seq, keyed.KeyVersion)
			}
			if r.KeyVersion == 0 {
				if !bytes.Equal(Hash(prev, r.Seq, Canonical(r)), r.Hash) {
					return broken("its contents do not match its hash (altered after it was written)")
				}
			} else {
				key, err := ring.version(ctx, r.KeyVersion)
				switch {
				case errors.Is(err, ErrUnknownKeyVersion):
					return broken("it names audit key version %d, which the tenant never had", r.KeyVersion)
				case err != nil:
					return fmt.Errorf("audit record %d: audit key version %d: %w", r.Seq, r.KeyVersion, err)
				}
				if !hmac.Equal(MAC(key, prev, r.Seq, Canonical(r)), r.Hash) {
					return broken("its MAC does not verify under audit key version %d (altered after it was written)", r.KeyVersion)
				}
				keyed = r
				res.Keyed++
			}
			for _, cp := range mine {
				if cp.Seq == r.Seq {
					if b := cp.against(&repo.AuditLink{Seq: r.Seq, Hash: r.Hash, KeyVersion: r.KeyVersion}, r.Seq); b != nil {
						res.Broken = b
						return b
					}
				}
			}
			prev, want = r.Hash, r.Seq+1
			res.Records++
			return nil
		})
		if err != nil {
			return err
		}
		seq, hash, err := repo.AuditHead(ctx, tx, tenant)
		if err != nil {
			return err
		}
		if seq != res.Records || (seq > 0 && !bytes.Equal(hash, prev)) {
			res.Broken = &BrokenLinkError{Tenant: tenant, Seq: res.Records + 1,
				Reason: fmt.Sprintf("the chain ends at record %d but its head is record %d: records were removed from its end", res.Records, seq)}
			return res.Broken
		}
		// The lowest checkpoint past the end names the first record missing.
		var past *Checkpoint
		for i, cp := range mine {
			if cp.Seq > res.Records && (past == nil || cp.Seq < past.Seq) {
				past = &mine[i]
			}
		}
		if past != nil {
			res.Broken = past.against(nil, res.Records)
			return res.Broken
		}
		return nil
	})
	if res.Broken != nil {
		return res, res.Broken
	}
	if err != nil {
		return res, fmt.Errorf("verify audit trail of %s: %w", tenant, err)
	}
	return res, nil
}

// Link is a record as the API and exports show it: one link of the tenant's chain, its
// hashes in hex. (Entry is the catalogue's word.)
type Link struct {
	Seq               int64           `json:"seq" doc:"Position in the tenant's chain, from 1"`
	Time              time.Time       `json:"time"`
	Tenant            string          `json:"tenant"`
	Subject           string          `json:"subject" doc:"The token's sub, or the operator command"`
	Role              string          `json:"role"`
	Action            string          `json:"action" example:"entry.update"`
	Target            string          `json:"target" example:"entry:internal-root-ca"`
	FingerprintBefore string          `json:"fingerprintBefore,omitempty"`
	FingerprintAfter  string          `json:"fingerprintAfter,omitempty"`
	RequestID         string          `json:"requestId,omitempty"`
	ClientAddr        string          `json:"clientAddr,omitempty"`
	Detail            json.RawMessage `json:"detail" doc:"Counts and names the action reports; never values"`
	PrevHash          string          `json:"prevHash" doc:"Hex hash of the previous record"`
	Hash              string          `json:"hash" doc:"Hex HMAC-SHA-256 under the tenant's audit key of version keyVersion (or SHA-256 without keyVersion) of prevHash, seq and this record's canonical bytes"`
	KeyVersion        int             `json:"keyVersion,omitempty" doc:"Version of the tenant's audit key hash is a MAC under; absent for a record chained by plain SHA-256"`
}

// ToLink converts a stored record.
func ToLink(r *repo.AuditRecord) Link {
	detail := json.RawMessage(r.Detail)
	if !json.Valid(detail) {
		detail = json.RawMessage("{}")
	}
	return Link{Seq: r.Seq, Time: r.At.UTC(), Tenant: r.TenantID, Subject: r.Subject, Role: r.Role,
		Action: r.Action, Target: r.Target, FingerprintBefore: r.FingerprintBefore, FingerprintAfter: r.FingerprintAfter,
		RequestID: r.RequestID, ClientAddr: r.ClientAddr, Detail: detail,
		PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash), KeyVersion: r.KeyVersion}
}

// List returns a page of the tenant's records, newest first, and whether more follow.
func (s *Service) List(ctx context.Context, tenant string, f repo.AuditFilter) ([]*repo.AuditRecord, bool, error) {
	var (
		out  []*repo.AuditRecord
		more bool
	)
	if _, err := Chain(ctx, s.Pool, s.Keys, tenant); err != nil {
		return nil, false, err
	}
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		var err error
		out, more, err = repo.ListAudit(ctx, tx, tenant, f)
		return err
	})
	return out, more, err
}

// Export writes every record of tenant as JSON lines, in chain order, and returns how
// many it wrote.
func (s *Service) Export(ctx context.Context, tenant string, w io.Writer) (int64, error) {
	var n int64
	enc := json.NewEncoder(w)
	if _, err := Chain(ctx, s.Pool, s.Keys, tenant); err != nil {
		return 0, err
	}
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		return repo.ScanAudit(ctx, tx, tenant, func(r *repo.AuditRecord) error {
			n++
			return enc.Encode(ToLink(r))
		})
	})
	if err != nil {
		return n, fmt.Errorf("export audit trail of %s: %w", tenant, err)
	}
	return n, nil
}
