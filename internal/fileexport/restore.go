package fileexport

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/tenantkey"
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
	// Catalog stores the restored entries, under the rules and through the write of any
	// other entry.
	Catalog *catalog.Service
	// Keys seal the restored node credentials under the tenant's keys, and open the file
	// with the master keys unless FileKeys is set.
	Keys *tenantkey.Keys
	// FileKeys opens the file; nil means the master keys (Keys.Opener). `import --key`
	// sets it to the key file given: a master key the file was sealed under, or a runtime
	// key of the file's tenant.
	FileKeys *credfile.Keys
	// Logger receives warnings.
	Logger *slog.Logger
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
	opener := im.Keys.Opener()
	if im.FileKeys != nil {
		opener = *im.FileKeys
	}
	doc, h, err := credfile.Open(opener, data, fileTenant)
	if err != nil {
		return res, err
	}
	res.FileGeneration = h.Generation

	entries, err := importedEntries(doc)
	if err != nil {
		return res, err
	}
	if h.TenantKey != nil && fileTenant == o.Tenant {
		// A tenant restored from its own file keeps its key, and its runtimes their keys.
		if _, err := im.Keys.Adopt(ctx, o.Tenant, *h.TenantKey); err != nil {
			return res, err
		}
	}
	ring, err := im.Keys.Ring(ctx, o.Tenant)
	if err != nil {
		return res, err
	}
	secrets := make([]repo.NodeSecret, 0, len(doc.NodeCredentials))
	for _, c := range doc.NodeCredentials {
		value, err := c.Bytes()
		if err != nil {
			return res, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
		}
		sealed, err := ring.Seal(value, sealing.NodeSecret(o.Tenant, c.NodeID, c.Name))
		clear(value)
		if err != nil {
			return res, fmt.Errorf("seal node %s credential %s: %w", c.NodeID, c.Name, err)
		}
		secrets = append(secrets, repo.NodeSecret{NodeID: c.NodeID, Name: c.Name, Sealed: sealed, KeyID: ring.CurrentKeyID()})
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
		warnings, err := im.Catalog.Import(ctx, tx, o.Tenant, entries, map[string]any{"import": true, "fromTenant": fileTenant})
		if errors.Is(err, catalog.ErrInvalid) {
			return fmt.Errorf("%w: %w", ErrInvalidDocument, err)
		}
		if err != nil {
			return err
		}
		res.Warnings = warnings
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

// importedEntries are the document's entries as the catalogue imports them.
func importedEntries(doc *credfile.Document) ([]catalog.Imported, error) {
	out := make([]catalog.Imported, 0, len(doc.Entries))
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	for _, de := range doc.Entries {
		if de.ID == "" {
			return nil, fmt.Errorf("%w: an entry has no ID", ErrInvalidDocument)
		}
		name, typ, source, notes := de.Name, de.Type, de.Source, de.Notes
		in := catalog.Input{ID: de.ID, Name: &name, Type: &typ, Source: &source, Notes: &notes,
			CertPEM: secret.PEM(de.CertPEM), KeyPEM: secret.PEM(de.KeyPEM),
			CertPath: opt(de.CertPath), KeyPath: opt(de.KeyPath), PassphrasePath: opt(de.PassphraseFile)}
		out = append(out, catalog.Imported{Input: in, Recorded: de.Metadata, CreatedAt: de.CreatedAt, UpdatedAt: de.UpdatedAt})
	}
	return out, nil
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
