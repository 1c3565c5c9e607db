package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
)

// Imported is an entry as a backup (a credentials file) holds it: its fields and material
// as an Input, the metadata recorded when it was written, and its times.
type Imported struct {
	Input
	// Recorded is the metadata the backup recorded; a file entry whose files cannot be
	// read where it is restored keeps it until they appear.
	Recorded             material.Metadata
	CreatedAt, UpdatedAt time.Time
}

// Import stores entries restored from a backup into tenant, in tx, which holds the
// tenant's lock and moved its generation (repo.RaiseGeneration), after the tenant was
// emptied. Every entry goes through the rules and the write of any other (commit): an entry
// the API would refuse is refused here too, with a *ValidationError naming the entry's ID
// (wrapping ErrInvalid), and each entry gets its version and its audit record, whose detail
// adds detail. Inline material is sealed under the current key. A file entry whose files
// cannot be read here keeps its paths and the recorded metadata, with a warning.
func (s *Service) Import(ctx context.Context, tx pgx.Tx, tenant string, entries []Imported, detail map[string]any) (warnings []string, err error) {
	ids := make([]string, len(entries))
	for i, im := range entries {
		ids[i] = im.ID
	}
	histories, err := repo.Histories(ctx, tx, tenant, ids)
	if err != nil {
		return nil, err
	}
	changes := make([]*change, 0, len(entries))
	for _, im := range entries {
		in := im.Input
		p, err := s.prepare(ctx, tenant, in.ID, str(in.Name), str(in.Type), str(in.Source), str(in.Notes), in.encoded(), in.paths())
		var ve *ValidationError
		switch {
		case errors.As(err, &ve) && str(in.Source) == SourceFile &&
			len(checkFields(in.ID, str(in.Name), str(in.Type), str(in.Source), str(in.Notes))) == 0:
			// The files may live on the machine the backup came from only.
			p = s.prepared(tenant, in, im.Recorded)
			warnings = append(warnings, fmt.Sprintf("entry %s: file material not usable here (%s); keeping its paths and recorded metadata", in.ID, ve.Issues[0]))
		case errors.As(err, &ve):
			return nil, fmt.Errorf("entry %s: %w", in.ID, err)
		case err != nil:
			return nil, err
		}
		p.entry.CreatedAt, p.entry.UpdatedAt = im.CreatedAt, im.UpdatedAt
		changes = append(changes, &change{action: repo.VersionCreate, after: p, history: histories[in.ID], detail: detail})
	}
	return warnings, s.commit(ctx, tx, tenant, false, changes...)
}

// prepared is a file entry whose fields passed the rules but whose files could not be
// judged, with the metadata recorded for it.
func (s *Service) prepared(tenant string, in Input, meta material.Metadata) *prepared {
	paths := in.paths()
	e := &repo.Entry{TenantID: tenant, ID: in.ID, Name: str(in.Name), Type: material.Kind(str(in.Type)),
		Source: SourceFile, Notes: str(in.Notes), CertPath: paths.Cert, KeyPath: paths.Key,
		PassphrasePath: paths.Passphrase, Meta: meta}
	return &prepared{entry: e, material: &material.Material{Metadata: meta}}
}
