package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
}

// TenantResult is one tenant's verified chain.
type TenantResult struct {
	Tenant  string
	Records int64
	// Broken is the first broken link; nil when the chain verifies.
	Broken *BrokenLinkError
}

// Verify chains what is pending (see Chain), then walks every tenant's chain from its
// first record: sequence numbers without gaps from 1, each record's previous hash equal
// to the hash before it, each hash recomputed from the record's canonical bytes, and the
// chain ending where the tenant's head says.
// The error is a *BrokenLinkError (for the first tenant with one) or a database failure.
func (s *Service) Verify(ctx context.Context) ([]TenantResult, error) {
	tenants, err := repo.ListTenants(ctx, s.Pool)
	if err != nil {
		return nil, fmt.Errorf("verify audit trail: %w", err)
	}
	var (
		out   []TenantResult
		first error
	)
	for _, t := range tenants {
		res, err := s.VerifyTenant(ctx, t.ID)
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

// VerifyTenant walks one tenant's chain (see Verify).
func (s *Service) VerifyTenant(ctx context.Context, tenant string) (TenantResult, error) {
	res := TenantResult{Tenant: tenant}
	if _, err := Chain(ctx, s.Pool, tenant); err != nil {
		return res, err
	}
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		prev, want := ZeroHash, int64(1)
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
			}
			if h := Hash(prev, r.Seq, Canonical(r)); !bytes.Equal(h, r.Hash) {
				return broken("its contents do not match its hash (altered after it was written)")
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
	PrevHash          string          `json:"prevHash" doc:"Hex SHA-256 of the previous record"`
	Hash              string          `json:"hash" doc:"Hex SHA-256 of prevHash, seq and this record's canonical bytes"`
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
		PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash)}
}

// List returns a page of the tenant's records, newest first, and whether more follow.
func (s *Service) List(ctx context.Context, tenant string, f repo.AuditFilter) ([]*repo.AuditRecord, bool, error) {
	var (
		out  []*repo.AuditRecord
		more bool
	)
	if _, err := Chain(ctx, s.Pool, tenant); err != nil {
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
	if _, err := Chain(ctx, s.Pool, tenant); err != nil {
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
