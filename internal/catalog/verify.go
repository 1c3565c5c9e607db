package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
)

// ErrMaterialUnavailable means a stored entry's material cannot be loaded now: a file entry
// whose files are missing or do not parse, or sealed material that does not open.
var ErrMaterialUnavailable = errors.New("entry material is not available")

// Material loads the current material of entry id of tenant: inline material opened and
// parsed, file material read afresh. ErrNotFound when there is no such entry; an error
// wrapping ErrMaterialUnavailable when the material cannot be loaded now, or
// material.ErrNotAdmitted when its key derivations could not run now. The material holds
// the private key of a pair: callers use what they need and drop it.
func (s *Service) Material(ctx context.Context, tenant, id string) (*repo.Entry, *material.Material, error) {
	list, err := repo.LookupEntries(ctx, s.Pool, tenant, []string{id})
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 {
		return nil, nil, fmt.Errorf("load entry %s: %w", id, repo.ErrNotFound)
	}
	e := list[0]
	m, err := s.entryMaterial(ctx, e)
	return e, m, err
}

func (s *Service) entryMaterial(ctx context.Context, e *repo.Entry) (*material.Material, error) {
	var (
		m      *material.Material
		issues []material.Issue
	)
	if e.Source == SourceFile {
		var err error
		m, issues, err = s.Roots.LoadFilesWith(ctx, e.Type, e.TenantID,
			material.Paths{Cert: e.CertPath, Key: e.KeyPath, Passphrase: e.PassphrasePath}, material.PathFields, s.now(), s.KDF)
		if err != nil {
			return nil, fmt.Errorf("load entry %s: %w", e.ID, err)
		}
	} else {
		cert, key, err := s.Open(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("load entry %s: %w: %w", e.ID, ErrMaterialUnavailable, err)
		}
		m, issues = material.Inspect(e.Type, cert, key, material.PEMFields, s.now())
	}
	if len(issues) > 0 {
		parts := make([]string, len(issues))
		for i, is := range issues {
			parts[i] = is.String()
		}
		return nil, fmt.Errorf("load entry %s: %w: %s", e.ID, ErrMaterialUnavailable, strings.Join(parts, "; "))
	}
	return m, nil
}

// verify checks a prepared pair against the ca-bundle named by bundleID; nil, nil when
// bundleID is empty. A bundleID that names nothing usable is a *ValidationError on
// verifyWith.
func (s *Service) verify(ctx context.Context, tenant string, p *prepared, bundleID string) (*Verification, error) {
	if bundleID == "" {
		return nil, nil
	}
	fail := func(format string, args ...any) error {
		return &ValidationError{Issues: []material.Issue{{Field: "verifyWith", Message: fmt.Sprintf(format, args...)}}}
	}
	if !p.entry.Type.IsPair() {
		return nil, fail("is for a client-pair or server-pair: a %s is not verified against another bundle", p.entry.Type)
	}
	if !ValidID(bundleID) {
		return nil, fail("must be the ID of a ca-bundle of this tenant")
	}
	e, bundle, err := s.Material(ctx, tenant, bundleID)
	switch {
	case errors.Is(err, repo.ErrNotFound):
		return nil, fail("names %q, which is no entry of this tenant", bundleID)
	case e != nil && e.Type != material.CABundle:
		return nil, fail("names %q, a %s; it must name a ca-bundle", bundleID, e.Type)
	case errors.Is(err, ErrMaterialUnavailable):
		return nil, fail("the ca-bundle %q cannot be loaded now: %s", bundleID, err.Error())
	case err != nil:
		return nil, err
	}
	return &Verification{CABundle: bundleID, Verification: material.VerifyWith(p.material, bundle, s.now())}, nil
}
