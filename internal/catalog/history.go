package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// ErrUnknownVersion means the entry's history has no such version (in this tenant). It
// wraps repo.ErrNotFound.
var ErrUnknownVersion = fmt.Errorf("no such version: %w", repo.ErrNotFound)

// OpenVersion decrypts an inline version's sealed material.
func (s *Service) OpenVersion(ctx context.Context, v *repo.Version) (cert, key secret.PEM, err error) {
	if v.Source != SourceInline {
		return nil, nil, fmt.Errorf("open version %d of %s: not an inline version", v.Version, v.EntryID)
	}
	ring, err := s.Keys.Ring(ctx, v.TenantID)
	if err != nil {
		return nil, nil, err
	}
	return sealing.OpenPair(ring, sealing.Place{Tenant: v.TenantID, EntryID: v.EntryID, Version: v.Version}, v.Sealed)
}

// recordRefusedDelete audits a delete refused because deployed nodes reference the entry.
// The refusal changed nothing, so its record gets a transaction of its own; failing to
// write it is logged, and the refusal still answers.
func (s *Service) recordRefusedDelete(ctx context.Context, tenant, id string, re *ReferencedError) {
	err := audit.RecordAlone(ctx, s.Pool, audit.Event{Tenant: tenant, Action: audit.EntryDeleteRefused,
		Target: audit.EntryTarget(id), Detail: map[string]any{"references": re.Total}})
	if err != nil {
		s.Logger.Error("audit record of a refused delete failed", "tenant", tenant, "entry", id, "err", err)
		return
	}
	s.Chainer.Kick(tenant)
}

// Versions returns a page of entry id's history, newest first, below version before (0:
// from the newest), and whether more follow, each as its summary (never sealed material).
// An ID with neither an entry nor history is repo.ErrNotFound; an entry that predates
// history has an empty one.
func (s *Service) Versions(ctx context.Context, tenant, id string, before int64, limit int) ([]repo.VersionSummary, bool, error) {
	out, more, err := repo.ListVersionsScoped(ctx, s.Pool, tenant, id, before, limit)
	if err != nil || len(out) > 0 || before > 0 {
		return out, more, err
	}
	if _, err := repo.GetEntry(ctx, s.Pool, tenant, id); err != nil {
		return nil, false, err
	}
	return out, false, nil
}

// Version returns one version of entry id, without its sealed material; ErrUnknownVersion
// when there is no such version in the tenant.
func (s *Service) Version(ctx context.Context, tenant, id string, version int64) (*repo.Version, error) {
	var v *repo.Version
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		var err error
		v, err = repo.GetVersion(ctx, tx, tenant, id, version)
		return err
	})
	if errors.Is(err, repo.ErrNotFound) {
		return nil, fmt.Errorf("version %d of %s: %w", version, id, ErrUnknownVersion)
	}
	if err != nil {
		return nil, err
	}
	v.Sealed = sealing.Pair{}
	return v, nil
}

// Restore makes a new version of entry id whose fields and material are those of the
// given version; a deleted entry is recreated. References are untouched, so a type change
// of a referenced entry is refused with a *ReferencedError. pre is what the caller requires
// of the current entry (a deleted entry has no version: ErrVersionMismatch for If-Match).
// File-sourced material is read from its paths again and must be valid there now.
func (s *Service) Restore(ctx context.Context, tenant, id string, version int64, pre Precondition) (*Result, error) {
	defer s.changed(tenant)
	if err := s.keysReady(ctx, tenant); err != nil {
		return nil, err
	}
	var res *Result
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		// The tenant's lock, the entry and its history first, as every write but a create.
		cur, h, err := repo.BeginEntryWrite(ctx, tx, tenant, id)
		if errors.Is(err, repo.ErrNotFound) {
			cur, err = nil, nil
		}
		if err != nil {
			return err
		}
		v, err := repo.GetVersion(ctx, tx, tenant, id, version)
		if errors.Is(err, repo.ErrNotFound) {
			return fmt.Errorf("restore version %d of %s: %w", version, id, ErrUnknownVersion)
		}
		if err != nil {
			return err
		}
		var cert, key secret.PEM
		if v.Source == SourceInline {
			if cert, key, err = s.OpenVersion(ctx, v); err != nil {
				return err
			}
		}
		if err := pre.check(cur, "restore "+id); err != nil {
			return err
		}
		if cur != nil && cur.Type != v.Type {
			n, err := repo.CountReferences(ctx, tx, tenant, id)
			if err != nil {
				return err
			}
			if n > 0 {
				refs, err := repo.ListReferences(ctx, tx, tenant, id, nil, MaxConflictReferences)
				if err != nil {
					return err
				}
				return &ReferencedError{EntryID: id, References: refs, Total: n}
			}
		}
		// Versions do not record a passphrase file: a file entry keeps the one it has now.
		paths := material.Paths{Cert: v.CertPath, Key: v.KeyPath}
		if v.Source == SourceFile && cur != nil && cur.Source == SourceFile {
			paths.Passphrase = cur.PassphrasePath
		}
		p, err := s.prepare(ctx, tenant, id, v.Name, string(v.Type), v.Source, v.Notes,
			material.Encoded{CertPEM: cert, KeyPEM: key}, paths)
		if err != nil {
			return err
		}
		res = &Result{Entry: p.entry, Warnings: p.warnings, Created: cur == nil}
		return s.commit(ctx, tx, tenant, false, &change{action: repo.VersionRestore, before: cur, after: p,
			history: h, restoredFrom: v.Version})
	})
	if err != nil {
		return nil, err
	}
	s.logWarnings(tenant, id, res.Warnings)
	return res, nil
}

// PruneHistory applies the retention to every tenant: each entry keeps its keep newest
// versions, and a deleted entry's history goes once its newest version is older than
// maxAge. It returns how many versions went.
func (s *Service) PruneHistory(ctx context.Context, keep int, maxAge time.Duration) (int64, error) {
	if keep < 1 {
		return 0, fmt.Errorf("prune history: keep must be at least 1, not %d", keep)
	}
	tenants, err := repo.ListTenants(ctx, s.Pool)
	if err != nil {
		return 0, fmt.Errorf("prune history: %w", err)
	}
	var total int64
	cutoff := s.now().Add(-maxAge)
	for _, t := range tenants {
		err := db.InTenant(ctx, s.Pool, t.ID, func(tx pgx.Tx) error {
			n, err := repo.PruneVersions(ctx, tx, t.ID, keep, cutoff)
			total += n
			return err
		})
		if err != nil {
			return total, fmt.Errorf("prune history of %s: %w", t.ID, err)
		}
	}
	return total, nil
}

// RunPruner prunes the history at once and then every interval until ctx ends, logging
// what it removed. serve runs it in the background.
func (s *Service) RunPruner(ctx context.Context, keep int, maxAge, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.PruneHistory(ctx, keep, maxAge)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.Logger.Error("history pruning failed; retrying at the next interval", "err", err)
		case n > 0:
			s.Logger.Info("history pruned", "versions", n, "keep", keep, "deleted_after", maxAge)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
