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
func (s *Service) OpenVersion(v *repo.Version) (cert, key secret.PEM, err error) {
	if v.Source != SourceInline {
		return nil, nil, fmt.Errorf("open version %d of %s: not an inline version", v.Version, v.EntryID)
	}
	return sealing.OpenPair(s.Ring, sealing.Place{Tenant: v.TenantID, EntryID: v.EntryID, Version: v.Version}, v.Sealed)
}

// materialOf opens an inline entry's stored material; nil for a file entry.
func (s *Service) materialOf(e *repo.Entry) (cert, key secret.PEM, err error) {
	if e == nil || e.Source != SourceInline {
		return nil, nil, nil
	}
	return s.Open(e)
}

// versionOf builds version n of e's history, its material sealed for that version.
func (s *Service) versionOf(ctx context.Context, e *repo.Entry, n int64, action string, restoredFrom int64) (*repo.Version, error) {
	v := &repo.Version{
		TenantID: e.TenantID, EntryID: e.ID, Version: n, Action: action, EntryVersion: e.Version,
		RestoredFrom: restoredFrom, Name: e.Name, Type: e.Type, Source: e.Source, Notes: e.Notes,
		CertPath: e.CertPath, KeyPath: e.KeyPath, Meta: e.Meta, ChangedBy: audit.ActorFrom(ctx).Subject,
	}
	if e.Source != SourceInline {
		return v, nil
	}
	cert, key, err := s.materialOf(e)
	if err != nil {
		return nil, fmt.Errorf("record version %d of %s: %w", n, e.ID, err)
	}
	if v.Sealed, err = sealing.SealPair(s.Ring, sealing.Place{Tenant: e.TenantID, EntryID: e.ID, Version: n}, cert, key); err != nil {
		return nil, fmt.Errorf("record version %d of %s: %w", n, e.ID, err)
	}
	return v, nil
}

// change is one write of an entry, as history and audit record it.
type change struct {
	action       string // repo.Version* action
	before       *repo.Entry
	after        *repo.Entry
	restoredFrom int64
	// last is the entry ID's last version number when the caller read it under the
	// tenant's lock already (known); otherwise record reads it.
	last  int64
	known bool
}

var auditActions = map[string]string{
	repo.VersionCreate: audit.EntryCreate, repo.VersionUpdate: audit.EntryUpdate,
	repo.VersionDelete: audit.EntryDelete, repo.VersionRestore: audit.EntryRestore,
}

// record writes a change's version row and audit record in its transaction, which holds
// the tenant's row lock: version numbers are the entry ID's last plus one. An entry that
// predates history gets its state before the change recorded first, as a baseline.
func (s *Service) record(ctx context.Context, tx pgx.Tx, c change) (int64, error) {
	e := c.after
	if e == nil {
		e = c.before
	}
	last := c.last
	if !c.known {
		var err error
		if last, err = repo.LastVersion(ctx, tx, e.TenantID, e.ID); err != nil {
			return 0, err
		}
	}
	if c.before == nil && last > 0 {
		v, err := repo.ContinueEntryVersion(ctx, tx, e.TenantID, e.ID, e.Version)
		if err != nil {
			return 0, err
		}
		e.Version = v
	}
	if last == 0 && c.before != nil && c.action != repo.VersionDelete {
		last = 1
		base, err := s.versionOf(ctx, c.before, last, repo.VersionBaseline, 0)
		if err != nil {
			return 0, err
		}
		if err := repo.InsertVersion(ctx, tx, base); err != nil {
			return 0, err
		}
	}
	n := last + 1
	v, err := s.versionOf(ctx, e, n, c.action, c.restoredFrom)
	if err != nil {
		return 0, err
	}
	rec, err := audit.Prepare(ctx, c.event(n))
	if err != nil {
		return 0, err
	}
	return n, repo.RecordVersion(ctx, tx, v, rec)
}

// event is the audit record of a change that made version n.
func (c change) event(n int64) audit.Event {
	e := c.after
	if e == nil {
		e = c.before
	}
	ev := audit.Event{Tenant: e.TenantID, Action: auditActions[c.action], Target: audit.EntryTarget(e.ID),
		Detail: map[string]any{"version": n}}
	if c.before != nil {
		ev.FingerprintBefore = c.before.Meta.FingerprintSHA256
	}
	if c.after != nil {
		ev.FingerprintAfter = c.after.Meta.FingerprintSHA256
	}
	if c.restoredFrom > 0 {
		ev.Detail["restoredFrom"] = c.restoredFrom
	}
	return ev
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
	var res *Result
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(ctx, tx, tenant); err != nil {
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
			if cert, key, err = s.OpenVersion(v); err != nil {
				return err
			}
		}
		cur, err := repo.GetEntryForUpdate(ctx, tx, tenant, id)
		if errors.Is(err, repo.ErrNotFound) {
			cur, err = nil, nil
		}
		if err != nil {
			return err
		}
		if err := pre.check(cur, "restore "+id); err != nil {
			return err
		}
		switch {
		case cur == nil:
		case cur.Type != v.Type:
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
		if err := s.seal(p); err != nil {
			return err
		}
		res = &Result{Entry: p.entry, Warnings: p.warnings}
		if cur == nil {
			if err := repo.InsertEntry(ctx, tx, p.entry); err != nil {
				return err
			}
			res.Created = true
		} else {
			p.entry.Version, p.entry.CreatedAt = cur.Version, cur.CreatedAt
			if err := repo.UpdateEntry(ctx, tx, p.entry); err != nil {
				return err
			}
		}
		_, err = s.record(ctx, tx, change{action: repo.VersionRestore, before: cur, after: p.entry, restoredFrom: v.Version})
		return err
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

// createEntry stores a new entry with version 1 of its history and its audit record. An
// ID that never had history (nearly every create) takes one round trip, the tenant's row
// locked only server-side; an ID with a deleted entry's history continues its numbering
// in a transaction that takes the tenant's row lock first, as every write does.
func (s *Service) createEntry(ctx context.Context, e *repo.Entry) error {
	c := change{action: repo.VersionCreate, after: e}
	v, err := s.versionOf(ctx, e, 1, repo.VersionCreate, 0)
	if err != nil {
		return err
	}
	v.EntryVersion = 1 // what the insert assigns
	rec, err := audit.Prepare(ctx, c.event(1))
	if err != nil {
		return err
	}
	err = repo.CreateEntryFirst(ctx, s.Pool, e, v, rec)
	if !errors.Is(err, repo.ErrHasHistory) {
		return err
	}
	return db.InTenant(ctx, s.Pool, e.TenantID, func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(ctx, tx, e.TenantID); err != nil {
			return err
		}
		if err := repo.InsertEntry(ctx, tx, e); err != nil {
			return err
		}
		_, err := s.record(ctx, tx, c)
		return err
	})
}

// deleting reads the entry a delete is about to remove, with its material, for the
// version that keeps it: ErrNotFound when it is gone and pre asks nothing of it,
// ErrVersionMismatch when pre does not hold.
func (s *Service) deleting(ctx context.Context, tx pgx.Tx, tenant, id string, pre Precondition) (*repo.Entry, error) {
	cur, err := repo.GetEntryForUpdate(ctx, tx, tenant, id)
	if errors.Is(err, repo.ErrNotFound) && (pre.Version != 0 || pre.Exists) {
		return nil, pre.check(nil, "delete entry "+id)
	}
	if err != nil {
		return nil, err
	}
	if err := pre.check(cur, "delete entry "+id); err != nil {
		return nil, err
	}
	return cur, nil
}
