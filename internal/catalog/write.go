package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// change is one write of an entry: a create, an update, a restore or a delete, however it
// arrived (POST, PUT, a restore of a version, an import, the OPC UA migration).
type change struct {
	action string // repo.Version*
	// before is the entry as the write's transaction locked it; nil for a create.
	before *repo.Entry
	// after is the entry as it will be; nil for a delete. Only prepare makes one, so every
	// entry written passed the field rules and its material was judged.
	after *prepared
	// keepSealed says an update changed no material: the row keeps its ciphertext (after's
	// entry carries it), and only the version is sealed.
	keepSealed bool
	// history is where the entry ID's history stood when the write read it.
	history repo.History
	// restoredFrom is the version a restore brings back.
	restoredFrom int64
	// detail is added to the audit record's.
	detail map[string]any
}

var auditActions = map[string]string{
	repo.VersionCreate: audit.EntryCreate, repo.VersionUpdate: audit.EntryUpdate,
	repo.VersionDelete: audit.EntryDelete, repo.VersionRestore: audit.EntryRestore,
}

// commit is the one write of catalogue entries: every path that stores, changes or removes
// an entry ends here. For each change it seals the material the row keeps, seals the
// version it adds to the entry's history (and, for an entry older than history, a baseline
// of what it was), prepares its audit record, and writes all of it in one round trip
// (repo.WriteEntries). create says q is the pool and no transaction locked the tenant: the
// batch then moves the tenant's generation itself, once per change; otherwise q is a
// transaction that took the tenant's lock and moved the generation already.
func (s *Service) commit(ctx context.Context, q db.DBTX, tenant string, create bool, changes ...*change) error {
	writes := make([]repo.EntryWrite, len(changes))
	for i, c := range changes {
		w, err := s.entryWrite(ctx, tenant, c)
		if err != nil {
			return err
		}
		writes[i] = w
	}
	return repo.WriteEntries(ctx, q, tenant, create, writes)
}

// entryWrite seals and assembles one change for repo.WriteEntries.
func (s *Service) entryWrite(ctx context.Context, tenant string, c *change) (repo.EntryWrite, error) {
	w := repo.EntryWrite{Before: c.before}
	var (
		state      *repo.Entry // what the version records
		cert, key  secret.PEM
		entryVersn int64
	)
	if c.after != nil {
		e := c.after.entry
		switch {
		case c.before == nil:
			// A recreated ID continues the ETags its deleted entry used, so a client holding
			// an old one cannot mistake the new entry for it.
			e.Version = c.history.LastEntryVersion + 1
			entryVersn = e.Version
		default:
			e.CreatedAt = c.before.CreatedAt
			entryVersn = c.before.Version + 1
		}
		if !c.keepSealed {
			if err := s.seal(ctx, c.after); err != nil {
				return w, err
			}
		}
		w.Row, state, cert, key = e, e, c.after.certPEM, c.after.keyPEM
	} else {
		state, entryVersn = c.before, c.before.Version
		var err error
		if cert, key, err = s.materialOf(ctx, c.before); err != nil {
			return w, fmt.Errorf("delete entry %s: %w", c.before.ID, err)
		}
	}
	n := c.history.Last
	if n == 0 && c.before != nil && c.action != repo.VersionDelete {
		// An entry stored before history began: its state before the change is recorded
		// first, so the change has something to be restored from.
		bc, bk, err := s.materialOf(ctx, c.before)
		if err != nil {
			return w, fmt.Errorf("record the baseline of %s: %w", c.before.ID, err)
		}
		n = 1
		base, err := s.versionOf(ctx, c.before, bc, bk, n, repo.VersionBaseline, 0, c.before.Version)
		if err != nil {
			return w, err
		}
		w.Versions = append(w.Versions, base)
	}
	n++
	v, err := s.versionOf(ctx, state, cert, key, n, c.action, c.restoredFrom, entryVersn)
	if err != nil {
		return w, err
	}
	w.Versions = append(w.Versions, v)
	ev := audit.Event{Tenant: tenant, Action: auditActions[c.action], Target: audit.EntryTarget(state.ID),
		Detail: map[string]any{"version": n}}
	if c.before != nil {
		ev.FingerprintBefore = c.before.Meta.FingerprintSHA256
	}
	if c.after != nil {
		ev.FingerprintAfter = c.after.entry.Meta.FingerprintSHA256
	}
	if c.restoredFrom > 0 {
		ev.Detail["restoredFrom"] = c.restoredFrom
	}
	for k, v := range c.detail {
		ev.Detail[k] = v
	}
	if w.Audit, err = audit.Prepare(ctx, ev); err != nil {
		return w, err
	}
	return w, nil
}

// versionOf builds version n of an entry's history from its state and its material in
// clear, sealed for that version.
func (s *Service) versionOf(ctx context.Context, e *repo.Entry, cert, key secret.PEM, n int64, action string, restoredFrom, entryVersion int64) (*repo.Version, error) {
	v := &repo.Version{
		TenantID: e.TenantID, EntryID: e.ID, Version: n, Action: action, EntryVersion: entryVersion,
		RestoredFrom: restoredFrom, Name: e.Name, Type: e.Type, Source: e.Source, Notes: e.Notes,
		CertPath: e.CertPath, KeyPath: e.KeyPath, Meta: e.Meta, ChangedBy: audit.ActorFrom(ctx).Subject,
	}
	if e.Source != SourceInline {
		return v, nil
	}
	ring, err := s.Keys.Ring(ctx, e.TenantID)
	if err != nil {
		return nil, err
	}
	if v.Sealed, err = sealing.SealPair(ring, sealing.Place{Tenant: e.TenantID, EntryID: e.ID, Version: n}, cert, key); err != nil {
		return nil, fmt.Errorf("record version %d of %s: %w", n, e.ID, err)
	}
	return v, nil
}

// materialOf opens an inline entry's stored material; nil for a file entry.
func (s *Service) materialOf(ctx context.Context, e *repo.Entry) (cert, key secret.PEM, err error) {
	if e == nil || e.Source != SourceInline {
		return nil, nil, nil
	}
	return s.Open(ctx, e)
}

// maxCreateAttempts bounds how often a create reads the history again after a writer of
// the same ID numbered a version first (a delete of the entry just committed).
const maxCreateAttempts = 3

// create stores a new entry outside any transaction: it reads where the ID's history
// stands (a deleted entry's numbering continues), then commits in one batch that takes no
// lock another create waits for, so the creates of one tenant commit side by side.
func (s *Service) create(ctx context.Context, tenant string, p *prepared) error {
	for attempt := 1; ; attempt++ {
		h, err := repo.Histories(ctx, s.Pool, tenant, []string{p.entry.ID})
		if err != nil {
			return err
		}
		err = s.commit(ctx, s.Pool, tenant, true, &change{action: repo.VersionCreate, after: p, history: h[p.entry.ID]})
		if !errors.Is(err, repo.ErrVersionTaken) || attempt == maxCreateAttempts {
			return err
		}
	}
}
