package fileexport

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// ErrTenantNotEmpty means a restore was asked into a tenant that holds data, without Replace.
var ErrTenantNotEmpty = errors.New("tenant is not empty (restore with replace to overwrite it)")

// ErrInvalidDocument means the decrypted file holds something no export writes: an entry
// with an invalid ID, type or source, or material that does not parse.
var ErrInvalidDocument = errors.New("credentials file holds invalid data")

// Importer restores tenants from credentials files.
type Importer struct {
	// Pool reaches the database.
	Pool *pgxpool.Pool
	// Ring seals the restored material under its current key.
	Ring *envelope.Ring
	// FileRing opens the file; nil means Ring. `import --key` sets it to the file's key.
	FileRing *envelope.Ring
	// Roots confines file-sourced paths, as for the API.
	Roots material.Roots
	// Logger receives warnings.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ImportOptions say what to restore where.
type ImportOptions struct {
	// Tenant receives the data.
	Tenant string
	// FileTenant is the tenant the file must belong to; empty means Tenant. Setting it to
	// another tenant copies that tenant's backup into Tenant.
	FileTenant string
	// Replace deletes what Tenant holds first; without it a tenant with data is refused.
	Replace bool
}

// ImportResult says what a restore did.
type ImportResult struct {
	Tenant          string
	FileGeneration  int64
	Generation      int64 // the tenant's generation after the restore
	Entries         int
	References      int
	NodeCredentials int
	HasWorkspace    bool
	// Warnings are about file-sourced entries whose files cannot be read here: their paths
	// and the metadata from the file are kept.
	Warnings []string
}

func (im *Importer) now() time.Time {
	if im.Now != nil {
		return im.Now()
	}
	return time.Now()
}

func (im *Importer) logger() *slog.Logger {
	if im.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return im.Logger
}

// ImportFile restores a tenant from the credentials file at path.
func (im *Importer) ImportFile(ctx context.Context, path string, o ImportOptions) (ImportResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", path, err)
	}
	res, err := im.Import(ctx, data, o)
	if err != nil {
		return res, fmt.Errorf("import %s: %w", path, err)
	}
	return res, nil
}

// Import restores a tenant from a credentials file's bytes, in one transaction: entries
// (metadata re-derived from the material, inline material sealed under the current key),
// the workspace, its references and the node credentials. The tenant's generation ends
// past both its own and the file's, so the export job rewrites the file under the
// current key.
func (im *Importer) Import(ctx context.Context, data []byte, o ImportOptions) (ImportResult, error) {
	res := ImportResult{Tenant: o.Tenant}
	fileTenant := o.FileTenant
	if fileTenant == "" {
		fileTenant = o.Tenant
	}
	fileRing := im.FileRing
	if fileRing == nil {
		fileRing = im.Ring
	}
	doc, h, err := credfile.Open(fileRing, data, fileTenant)
	if err != nil {
		return res, err
	}
	res.FileGeneration = h.Generation

	entries, warnings, err := im.prepareEntries(ctx, o.Tenant, doc)
	if err != nil {
		return res, err
	}
	res.Warnings = warnings
	secrets := make([]repo.NodeSecret, 0, len(doc.NodeCredentials))
	for _, c := range doc.NodeCredentials {
		value, err := c.Bytes()
		if err != nil {
			return res, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
		}
		sealed, err := im.Ring.Seal(value, sealing.NodeSecret(o.Tenant, c.NodeID, c.Name))
		clear(value)
		if err != nil {
			return res, fmt.Errorf("seal node %s credential %s: %w", c.NodeID, c.Name, err)
		}
		secrets = append(secrets, repo.NodeSecret{NodeID: c.NodeID, Name: c.Name, Sealed: sealed, KeyID: im.Ring.CurrentKeyID()})
	}
	refs := make([]repo.Reference, len(doc.References))
	for i, r := range doc.References {
		refs[i] = repo.Reference(r)
	}

	err = db.InTenant(ctx, im.Pool, o.Tenant, func(tx pgx.Tx) error {
		// Raising the generation first takes the tenant row's lock, which every write to
		// the tenant also takes: no change slips in between the check and the inserts.
		gen, err := repo.RaiseGeneration(ctx, tx, o.Tenant, h.Generation)
		if err != nil {
			return err
		}
		res.Generation = gen
		has, err := repo.TenantHasData(ctx, tx, o.Tenant)
		if err != nil {
			return err
		}
		if has && !o.Replace {
			return fmt.Errorf("restore %s: %w", o.Tenant, ErrTenantNotEmpty)
		}
		if has {
			if err := repo.ClearTenantData(ctx, tx, o.Tenant); err != nil {
				return err
			}
		}
		if err := repo.ImportEntries(ctx, tx, entries); err != nil {
			return err
		}
		if len(doc.Workspace) > 0 && string(doc.Workspace) != "null" {
			if err := repo.ImportWorkspace(ctx, tx, o.Tenant, doc.Workspace); err != nil {
				return err
			}
			res.HasWorkspace = true
		}
		if err := repo.ImportReferences(ctx, tx, o.Tenant, refs); err != nil {
			return err
		}
		if err := repo.ImportNodeSecrets(ctx, tx, o.Tenant, secrets); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Event{Tenant: o.Tenant, Action: audit.TenantImport, Target: "tenant",
			Detail: map[string]any{"entries": len(entries), "references": len(refs), "nodeCredentials": len(secrets),
				"replaced": has, "fromTenant": fileTenant, "fileGeneration": h.Generation}})
	})
	if err != nil {
		return ImportResult{Tenant: o.Tenant, FileGeneration: h.Generation}, err
	}
	res.Entries, res.References, res.NodeCredentials = len(entries), len(refs), len(secrets)
	for _, w := range res.Warnings {
		im.logger().Warn("restore: "+w, "tenant", o.Tenant)
	}
	return res, nil
}

// prepareEntries turns the document's entries into rows for tenant: metadata re-derived,
// inline material sealed under the current key.
func (im *Importer) prepareEntries(ctx context.Context, tenant string, doc *credfile.Document) ([]*repo.Entry, []string, error) {
	var (
		out      = make([]*repo.Entry, 0, len(doc.Entries))
		warnings []string
		now      = im.now()
	)
	for _, de := range doc.Entries {
		kind := material.Kind(de.Type)
		if !catalog.ValidID(de.ID) || !kind.Valid() || (de.Source != "inline" && de.Source != "file") {
			return nil, nil, fmt.Errorf("%w: entry %q has an invalid ID, type or source", ErrInvalidDocument, de.ID)
		}
		e := &repo.Entry{
			TenantID: tenant, ID: de.ID, Name: de.Name, Type: kind, Source: de.Source, Notes: de.Notes,
			CreatedAt: de.CreatedAt, UpdatedAt: de.UpdatedAt,
		}
		switch de.Source {
		case "inline":
			cert, key := secret.PEM(de.CertPEM), secret.PEM(de.KeyPEM)
			m, issues := material.Inspect(kind, cert, key, material.PEMFields, now)
			if len(issues) > 0 {
				return nil, nil, fmt.Errorf("%w: entry %s: %s", ErrInvalidDocument, de.ID, issues[0])
			}
			e.Meta = m.Metadata
			var err error
			if e.Sealed, err = sealing.SealPair(im.Ring, sealing.Place{Tenant: tenant, EntryID: de.ID}, cert, key); err != nil {
				return nil, nil, err
			}
		default:
			e.CertPath, e.KeyPath, e.PassphrasePath = de.CertPath, de.KeyPath, de.PassphraseFile
			if e.CertPath == "" {
				return nil, nil, fmt.Errorf("%w: file entry %s has no certPath", ErrInvalidDocument, de.ID)
			}
			// An import runs alone, from the command line or at boot: no budget to share.
			m, issues, err := im.Roots.LoadFilesWith(ctx, kind, tenant,
				material.Paths{Cert: de.CertPath, Key: de.KeyPath, Passphrase: de.PassphraseFile}, material.PathFields, now, nil)
			if err != nil {
				return nil, nil, fmt.Errorf("entry %s: %w", de.ID, err)
			}
			if len(issues) == 0 {
				e.Meta = m.Metadata
				break
			}
			// The files may live on the machine the backup came from only; the entry keeps
			// its paths and the metadata recorded in the file until they appear.
			warnings = append(warnings, fmt.Sprintf("entry %s: file material not usable here (%s); keeping its paths and recorded metadata", de.ID, issues[0]))
			e.Meta = de.Metadata
		}
		out = append(out, e)
	}
	return out, warnings, nil
}

// BootImport restores the default tenant from dataDir's credentials.json when the database
// has no tenant at all: the move from a file-backed installation. It reports whether it
// imported. A file that exists but cannot be imported is an error, so a server never starts
// empty beside a file it would later overwrite.
func (im *Importer) BootImport(ctx context.Context, dataDir string) (ImportResult, bool, error) {
	path := credfile.Path(dataDir, credfile.DefaultTenant)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return ImportResult{}, false, nil
	}
	tenants, err := repo.ListTenants(ctx, im.Pool)
	if err != nil {
		return ImportResult{}, false, fmt.Errorf("boot import: %w", err)
	}
	if len(tenants) > 0 {
		return ImportResult{}, false, nil
	}
	res, err := im.ImportFile(ctx, path, ImportOptions{Tenant: credfile.DefaultTenant})
	if err != nil {
		return res, false, fmt.Errorf("boot import of the default tenant (the database is empty): %w", err)
	}
	return res, true, nil
}
