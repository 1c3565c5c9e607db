package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
)

// Put replaces the mutable fields of entry in.ID, or creates it when it does not exist (as
// HTTP's PUT does). Omitted fields keep their stored values; omitted material keeps the
// stored material (a renewed certificate may come without its unchanged key, and the other
// way round); new material re-derives the metadata. pre is what the caller requires of
// the current entry (If-Match, If-None-Match). Changing the type of a referenced entry is
// refused with a *ReferencedError.
func (s *Service) Put(ctx context.Context, tenant string, in Input, pre Precondition) (*Result, error) {
	defer s.changed(tenant)
	res, created, err := s.put(ctx, tenant, in, pre)
	if created && errors.Is(err, repo.ErrDuplicate) {
		// A create (POST) takes no tenant lock, so it can commit the ID between this PUT
		// finding it missing and inserting it: the PUT is then an update, tried again,
		// and its precondition judged against the entry that now exists.
		res, _, err = s.put(ctx, tenant, in, pre)
	}
	if err != nil {
		return nil, err
	}
	s.logWarnings(tenant, res.Entry.ID, res.Warnings)
	return res, nil
}

// put is one attempt of Put; created says it found the entry missing and tried to create it.
func (s *Service) put(ctx context.Context, tenant string, in Input, pre Precondition) (res *Result, created bool, err error) {
	if err := s.keysReady(ctx, tenant); err != nil {
		return nil, false, err
	}
	err = db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		// The tenant row first, as every write of the tenant but a create does (Delete,
		// a workspace deploy): one lock order, so a PUT racing a deploy waits instead of
		// deadlocking. The entry and where its history stands come in the same round trip.
		cur, h, err := repo.BeginEntryWrite(ctx, tx, tenant, in.ID)
		if errors.Is(err, repo.ErrNotFound) {
			if err := pre.check(nil, "create entry "+in.ID); err != nil {
				return err
			}
			created = true
			p, err := s.prepare(ctx, tenant, in.ID, str(in.Name), str(in.Type), str(in.Source), str(in.Notes), in.encoded(), in.paths())
			if err != nil {
				return err
			}
			v, err := s.verify(ctx, tenant, p, in.VerifyWith)
			if err != nil {
				return err
			}
			res = &Result{Entry: p.entry, Warnings: p.warnings, Created: true, Verification: v}
			return s.commit(ctx, tx, tenant, false, &change{action: repo.VersionCreate, after: p, history: h})
		}
		if err != nil {
			return err
		}
		if err := pre.check(cur, "update entry "+in.ID); err != nil {
			return err
		}
		c, v, err := s.updateOf(ctx, tx, tenant, cur, in)
		if err != nil {
			return err
		}
		c.history = h
		res = &Result{Entry: c.after.entry, Warnings: c.after.warnings, Verification: v}
		return s.commit(ctx, tx, tenant, false, c)
	})
	return res, created, err
}

// updateOf is the change a PUT makes to cur: in's fields over cur's, in's material (in any
// encoding) over cur's, judged as a whole again.
func (s *Service) updateOf(ctx context.Context, tx pgx.Tx, tenant string, cur *repo.Entry, in Input) (*change, *Verification, error) {
	name, typ, source, notes := cur.Name, string(cur.Type), cur.Source, cur.Notes
	if in.Name != nil {
		name = *in.Name
	}
	if in.Type != nil {
		typ = *in.Type
	}
	if in.Source != nil {
		source = *in.Source
	}
	if in.Notes != nil {
		notes = *in.Notes
	}
	if typ != string(cur.Type) {
		n, err := repo.CountReferences(ctx, tx, tenant, cur.ID)
		if err != nil {
			return nil, nil, err
		}
		if n > 0 {
			refs, err := repo.ListReferences(ctx, tx, tenant, cur.ID, nil, MaxConflictReferences)
			if err != nil {
				return nil, nil, err
			}
			return nil, nil, &ReferencedError{EntryID: cur.ID, References: refs, Total: n}
		}
	}

	sourceChanged := source != cur.Source
	if sourceChanged && !in.hasMaterial() {
		return nil, nil, &ValidationError{Issues: []material.Issue{{Field: "source",
			Message: "changing the source needs the new material (certPem/keyPem, certDer/keyDer or pkcs12 for inline, certPath/keyPath for file)"}}}
	}
	// Material: what the request brings, completed from what is stored unless the source
	// changed (then nothing stored applies).
	var (
		enc   = in.encoded()
		paths material.Paths
	)
	if !sourceChanged {
		if cur.Source == SourceInline {
			c, k, err := s.Open(ctx, cur)
			if err != nil {
				return nil, nil, err
			}
			// A PKCS#12 replaces certificate and key; otherwise each half given replaces
			// the stored one, in whichever encoding it comes.
			if len(in.PKCS12) == 0 {
				if len(in.CertPEM) == 0 && len(in.CertDER) == 0 {
					enc.CertPEM = c
				}
				if len(in.KeyPEM) == 0 && len(in.KeyDER) == 0 {
					enc.KeyPEM = k
				}
			}
		} else {
			paths = material.Paths{Cert: cur.CertPath, Key: cur.KeyPath, Passphrase: cur.PassphrasePath}
		}
	}
	if in.CertPath != nil {
		paths.Cert = *in.CertPath
	}
	if in.KeyPath != nil {
		paths.Key = *in.KeyPath
	}
	if in.PassphrasePath != nil {
		paths.Passphrase = *in.PassphrasePath
	}
	if source == SourceInline && material.Kind(typ) == material.CABundle && len(in.KeyPEM) == 0 && len(in.KeyDER) == 0 {
		enc.KeyPEM = nil // a pair turned into a bundle drops its stored key
	}
	if source == SourceFile && material.Kind(typ) == material.CABundle && in.KeyPath == nil {
		paths.Key = ""
	}

	p, err := s.prepare(ctx, tenant, cur.ID, name, typ, source, notes, enc, paths)
	if err != nil {
		return nil, nil, err
	}
	v, err := s.verify(ctx, tenant, p, in.VerifyWith)
	if err != nil {
		return nil, nil, err
	}
	c := &change{action: repo.VersionUpdate, before: cur, after: p}
	if !in.hasMaterial() && !sourceChanged && typ == string(cur.Type) {
		// Nothing about the material changed: the row keeps its ciphertext and metadata
		// as they are, and the re-read material raises no warnings again.
		c.keepSealed = true
		p.entry.Sealed = cur.Sealed
		p.entry.Meta = cur.Meta
		p.warnings = nil
	}
	return c, v, nil
}

// Delete removes an entry. A referenced entry is refused with a *ReferencedError listing
// the first MaxConflictReferences references in (flow, node, field) order; the foreign key
// from the references table makes the database refuse it too, so a concurrent deploy can
// never be left pointing at nothing. File contents on disk are never touched.
func (s *Service) Delete(ctx context.Context, tenant, id string, pre Precondition) error {
	// A referenced entry is refused from a read alone: a refused delete changes nothing,
	// so it need not queue behind the tenant's writers for the generation lock.
	refErr, err := s.readRefusal(ctx, tenant, id)
	if err != nil {
		return err
	}
	if refErr != nil {
		s.recordRefusedDelete(ctx, tenant, id, refErr)
		return refErr
	}
	defer s.changed(tenant)
	if err := s.keysReady(ctx, tenant); err != nil {
		return err
	}
	err = db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		cur, h, err := repo.BeginEntryWrite(ctx, tx, tenant, id)
		if errors.Is(err, repo.ErrNotFound) && (pre.Version != 0 || pre.Exists) {
			return pre.check(nil, "delete entry "+id)
		}
		if err != nil {
			return err
		}
		if err := pre.check(cur, "delete entry "+id); err != nil {
			return err
		}
		// The count is exact (kept by triggers) and the tenant row lock taken above
		// orders this against every deploy, so a referenced entry is answered from the
		// list without attempting the delete; the foreign key still refuses it if
		// anything ever slipped past.
		n, err := repo.CountReferences(ctx, tx, tenant, id)
		if err != nil {
			return err
		}
		if n > 0 {
			refs, err := repo.ListReferences(ctx, tx, tenant, id, nil, MaxConflictReferences)
			if err != nil {
				return err
			}
			refErr = &ReferencedError{EntryID: id, References: refs, Total: max(n, len(refs))}
			return refErr // rolls back: the generation does not move for a refused delete
		}
		return s.commit(ctx, tx, tenant, false, &change{action: repo.VersionDelete, before: cur, history: h})
	})
	if errors.Is(err, repo.ErrReferenced) && !errors.As(err, &refErr) {
		// The foreign key refused what the count did not see: list what refuses it now.
		if refErr, err = s.readRefusal(ctx, tenant, id); err == nil && refErr == nil {
			return fmt.Errorf("delete entry %s: %w", id, repo.ErrReferenced)
		}
		if err != nil {
			return err
		}
	}
	if refErr != nil {
		s.recordRefusedDelete(ctx, tenant, id, refErr)
		return refErr
	}
	return err
}

// references reads a page of the references to an entry and their count; ErrNotFound when
// the entry does not exist in the tenant.
func (s *Service) references(ctx context.Context, tenant, id string, after *repo.RefCursor, limit int) ([]repo.Reference, int, error) {
	var (
		refs  []repo.Reference
		total int
	)
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		if _, err := repo.GetEntry(ctx, tx, tenant, id); err != nil {
			return err
		}
		var err error
		if total, err = repo.CountReferences(ctx, tx, tenant, id); err != nil {
			return err
		}
		refs, err = repo.ListReferences(ctx, tx, tenant, id, after, limit)
		return err
	})
	return refs, total, err
}
