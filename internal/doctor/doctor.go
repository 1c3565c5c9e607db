// Package doctor checks a certificate store installation the way an operator would before
// a backup or after an incident: key and credentials files are 0600, the master key loads,
// each tenant's file decrypts and is at the database's generation, every sealed row
// decrypts, file-sourced material is readable, and which entries are expired or expire
// soon. It changes nothing.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/tenantkey"
)

// Status is the outcome of one check.
type Status string

// The outcomes. Anything but OK makes the report fail.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// DefaultExpiringWithin is how far ahead expiring entries are listed.
const DefaultExpiringWithin = 30 * 24 * time.Hour

// maxRowFailures bounds the rows listed per tenant when many fail the same way.
const maxRowFailures = 20

// Check is one finding.
type Check struct {
	// Check names what was checked: key-file, key, database, credentials-file, rows,
	// file-material, expiry.
	Check string `json:"check"`
	// Status is ok, warn or fail.
	Status Status `json:"status"`
	// Subject is what the finding is about: a path, a tenant, "tenant/entry".
	Subject string `json:"subject,omitempty"`
	// Message says what was found; it never quotes file contents.
	Message string `json:"message"`
}

// Report is every finding, in the order checked.
type Report struct {
	// OK is true when no check failed; warnings leave it true.
	OK bool `json:"ok"`
	// Failures and Warnings count the checks of each outcome.
	Failures int     `json:"failures"`
	Warnings int     `json:"warnings"`
	Checks   []Check `json:"checks"`
}

// Doctor runs the checks over one data directory and database.
type Doctor struct {
	// Pool reaches the database; nil skips every database check (and fails the report).
	Pool *pgxpool.Pool
	// PoolErr says why Pool is nil, for the report.
	PoolErr error
	// DataDir holds the files (and the master key file, when that is where it lives).
	DataDir string
	// Keys are the tenant keys under the master keyring; nil fails the key checks.
	Keys *tenantkey.Keys
	// KeysErr says why Keys is nil (the master key could not be opened), for the report.
	KeysErr error
	// MasterKey is where the master key lives; the zero value is loopze.key in DataDir.
	// Its files are checked (present, mode 0600); a key in a token has none.
	MasterKey masterkey.Source
	// Roots confines file-sourced paths, as for the API.
	Roots material.Roots
	// ExpiringWithin is how far ahead expiry is reported; DefaultExpiringWithin when zero,
	// no expiry check when negative.
	ExpiringWithin time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the key loading messages.
	Logger *slog.Logger

	report Report
}

func (d *Doctor) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Doctor) add(check string, st Status, subject, format string, args ...any) {
	d.report.Checks = append(d.report.Checks, Check{Check: check, Status: st, Subject: subject, Message: fmt.Sprintf(format, args...)})
}

// Run runs every check and returns the report.
func (d *Doctor) Run(ctx context.Context) Report {
	d.report = Report{}
	d.checkKeyFiles()
	keys := d.loadKeys()
	if d.Pool == nil {
		reason := "no database to check"
		if d.PoolErr != nil {
			reason = d.PoolErr.Error()
		}
		d.add("database", Fail, "", "%s", reason)
	} else if d.checkDatabase(ctx) {
		tenants, err := repo.ListTenants(ctx, d.Pool)
		if err != nil {
			d.add("database", Fail, "", "list tenants: %v", err)
		}
		d.checkFileRoots(tenants)
		for _, t := range tenants {
			d.checkFile(ctx, keys, t)
			d.checkRows(ctx, keys, t.ID)
		}
	}
	for _, c := range d.report.Checks {
		switch c.Status {
		case Fail:
			d.report.Failures++
		case Warn:
			d.report.Warnings++
		}
	}
	d.report.OK = d.report.Failures == 0
	return d.report
}

// checkKeyFiles checks the master key's files (loopze.key, and loopze.key.next during a
// rotation) exist with mode 0600; a key in a PKCS#11 token has none to check.
func (d *Doctor) checkKeyFiles() {
	src := d.MasterKey
	switch src.Kind {
	case masterkey.KindPKCS11:
		d.add("key-file", OK, src.PKCS11.String(), "the master key lives in a PKCS#11 token: no key file")
		return
	case "":
		src = masterkey.Source{Kind: masterkey.KindFile, Path: filepath.Join(d.DataDir, envelope.KeyFile),
			NextPath: filepath.Join(d.DataDir, envelope.NextKeyFile)}
	}
	for _, path := range []string{src.Path, src.NextPath} {
		next := path == src.NextPath
		info, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && next:
			continue
		case err != nil:
			d.add("key-file", Fail, path, "%v", err)
			continue
		}
		if next {
			d.add("key-file", Warn, path, "a master key rotation is under way or was interrupted: run rotate-key to finish it")
		}
		if src.Credential && !next {
			// systemd owns the credential's mode and decrypts it for the unit alone.
			d.add("key-file", OK, path, "the master key is a systemd credential")
			continue
		}
		d.checkMode("key-file", path, info)
	}
}

// checkFileRoots reports tenants other than the default while LOOPZE_FILE_ROOTS is unset:
// their file-sourced entries and direct *File paths are refused until it is set.
func (d *Doctor) checkFileRoots(tenants []repo.Tenant) {
	if len(d.Roots) > 0 {
		return
	}
	var others []string
	for _, t := range tenants {
		if t.ID != material.DefaultTenant {
			others = append(others, t.ID)
		}
	}
	if len(others) == 0 {
		return
	}
	shown := others
	if len(shown) > 5 {
		shown = append(shown[:5:5], "…")
	}
	d.add("file-roots", Warn, "LOOPZE_FILE_ROOTS",
		"unset, and %d tenant(s) other than %s exist (%s): they cannot use file-sourced material until it is set, e.g. LOOPZE_FILE_ROOTS=/etc/loopze/certs/{tenant}",
		len(others), material.DefaultTenant, strings.Join(shown, ", "))
}

// checkMode reports a secret file that grants anything to group or others: a failure for
// the master key, which the server refuses to start with, a warning for the rest.
func (d *Doctor) checkMode(check, path string, info fs.FileInfo) {
	mode := info.Mode().Perm()
	if runtime.GOOS != "windows" && mode&0o077 != 0 {
		st := Warn
		if check == "key-file" {
			st = Fail
		}
		d.add(check, st, path, "mode %#o is readable by others: chmod 600 %s", mode, path)
		return
	}
	d.add(check, OK, path, "mode %#o", mode)
}

func (d *Doctor) loadKeys() *tenantkey.Keys {
	if d.Keys == nil {
		reason := "no master key to check with"
		if d.KeysErr != nil {
			reason = d.KeysErr.Error()
		}
		d.add("key", Fail, d.DataDir, "%s", reason)
		return nil
	}
	d.add("key", OK, d.DataDir, "master key loaded; current %s, keys %v", d.Keys.Master.Current().ID(), d.Keys.Master.IDs())
	return d.Keys
}

func (d *Doctor) checkDatabase(ctx context.Context) bool {
	pending, err := db.Pending(ctx, d.Pool)
	switch {
	case err != nil:
		d.add("database", Fail, "", "%v", err)
		return false
	case pending:
		d.add("database", Fail, "", "migrations are pending: run loopze-certs migrate (or start the server)")
		return false
	}
	d.add("database", OK, "", "reachable and migrated")
	return true
}

// checkFile checks a tenant's file: present, 0600, decrypts, at the database's generation.
func (d *Doctor) checkFile(ctx context.Context, keys *tenantkey.Keys, t repo.Tenant) {
	path := credfile.Path(d.DataDir, t.ID)
	info, err := os.Stat(path)
	if err != nil {
		d.add("credentials-file", Fail, path, "tenant %s: %v", t.ID, err)
		return
	}
	d.checkMode("credentials-file", path, info)
	data, err := os.ReadFile(path)
	if err != nil {
		d.add("credentials-file", Fail, path, "%v", err)
		return
	}
	var (
		h       credfile.Header
		current credfile.FileKey
	)
	if keys == nil {
		if h, err = credfile.ParseHeader(data); err != nil {
			d.add("credentials-file", Fail, path, "%v", err)
			return
		}
	} else if _, h, err = credfile.Open(keys.Opener(), data, t.ID); err != nil {
		d.add("credentials-file", Fail, path, "does not decrypt: %v", err)
		return
	} else if current, err = keys.FileKey(ctx, t.ID); errors.Is(err, tenantkey.ErrNoKey) {
		d.add("credentials-file", Warn, path, "tenant %s has no key of its own yet: the server makes it at its next start and rewrites the file", t.ID)
		return
	} else if err != nil {
		d.add("credentials-file", Fail, path, "the tenant's key: %v", err)
		return
	}
	switch {
	case h.Generation < t.Generation:
		d.add("credentials-file", Fail, path, "generation %d is behind the database's %d: is the export job running? (loopze-certs export writes it now)", h.Generation, t.Generation)
	case h.Generation > t.Generation:
		d.add("credentials-file", Fail, path, "generation %d is ahead of the database's %d: the database is older than the file (restored from an older backup?)", h.Generation, t.Generation)
	case keys != nil && (h.Version != credfile.Version || h.KeyID != current.ID() || *h.TenantKey != current.TenantKey):
		d.add("credentials-file", Warn, path, "sealed under key %s, not the tenant's current %s (master key %s): the next export rewrites it",
			h.KeyID, current.ID(), current.TenantKey.MasterKeyID)
	default:
		d.add("credentials-file", OK, path, "decrypts; generation %d, key %s", h.Generation, h.KeyID)
	}
}

// checkRows opens every sealed row of a tenant, reads its file-sourced material, and lists
// expired and expiring entries.
func (d *Doctor) checkRows(ctx context.Context, keys *tenantkey.Keys, tenant string) {
	var (
		entries  []*repo.Entry
		versions []*repo.Version
		secrets  []repo.NodeSecret
	)
	err := db.InTenant(ctx, d.Pool, tenant, func(tx pgx.Tx) error {
		var err error
		if entries, err = repo.ExportEntries(ctx, tx, tenant); err != nil {
			return err
		}
		if versions, err = repo.ExportVersions(ctx, tx, tenant); err != nil {
			return err
		}
		secrets, err = repo.ExportNodeSecrets(ctx, tx, tenant)
		return err
	})
	if err != nil {
		d.add("rows", Fail, tenant, "read rows: %v", err)
		return
	}
	var ring *envelope.Ring
	if keys != nil {
		if ring, err = keys.Ring(ctx, tenant); err != nil {
			d.add("rows", Fail, tenant, "the tenant's key: %v", err)
			return
		}
	}
	now := d.now()
	failures := 0
	fail := func(subject, format string, args ...any) {
		failures++
		if failures <= maxRowFailures {
			d.add("rows", Fail, subject, format, args...)
		}
	}
	for _, e := range entries {
		subject := tenant + "/" + e.ID
		notAfter := e.Meta.NotAfter
		if e.Source == "file" {
			// The doctor runs alone, from the command line: no budget to share.
			m, issues, err := d.Roots.LoadFilesWith(ctx, e.Type, tenant, material.Paths{Cert: e.CertPath, Key: e.KeyPath, Passphrase: e.PassphrasePath}, material.PathFields, now, nil)
			if err != nil {
				d.add("file-material", Fail, subject, "not read: %v", err)
			} else if len(issues) > 0 {
				d.add("file-material", Fail, subject, "%s", issues[0])
			} else {
				d.add("file-material", OK, subject, "readable: %s", e.CertPath)
				notAfter = m.Metadata.NotAfter
			}
		} else if ring != nil {
			if _, _, err := sealing.OpenPair(ring, sealing.Place{Tenant: tenant, EntryID: e.ID}, e.Sealed); err != nil {
				fail(subject, "does not decrypt: %v", err)
			}
		}
		d.checkExpiry(subject, notAfter, now)
	}
	if ring != nil {
		for _, v := range versions {
			if len(v.Sealed.Cert) == 0 {
				continue
			}
			at := sealing.Place{Tenant: tenant, EntryID: v.EntryID, Version: v.Version}
			if _, _, err := sealing.OpenPair(ring, at, v.Sealed); err != nil {
				fail(fmt.Sprintf("%s/%s@%d", tenant, v.EntryID, v.Version), "does not decrypt: %v", err)
			}
		}
		for _, s := range secrets {
			if _, err := ring.Open(s.Sealed, sealing.NodeSecret(tenant, s.NodeID, s.Name)); err != nil {
				fail(tenant+"/node:"+s.NodeID, "credential %s does not decrypt: %v", s.Name, err)
			}
		}
	}
	legacy := 0
	// A tenant with no key of its own yet (an upgraded install doctor reads before the
	// server ran) has every row under the legacy keys: all of them are left to move.
	keyless := keys != nil && keys.Legacy != nil && ring == keys.Legacy
	if ring != nil {
		for _, e := range entries {
			if e.Sealed.KeyID != "" && (keyless || e.Sealed.KeyID != ring.CurrentKeyID()) {
				legacy++
			}
		}
		for _, s := range secrets {
			if keyless || s.KeyID != ring.CurrentKeyID() {
				legacy++
			}
		}
	}
	switch {
	case ring == nil:
		d.add("rows", Fail, tenant, "not checked: the master key does not load")
	case failures == 0 && legacy > 0:
		d.add("rows", Warn, tenant, "%d row(s) are sealed under an older key than the tenant's current one: the server moves them at start, rotate-key --tenant %s moves them now", legacy, tenant)
	case failures > maxRowFailures:
		d.add("rows", Fail, tenant, "%d more row(s) do not decrypt", failures-maxRowFailures)
	case failures == 0:
		d.add("rows", OK, tenant, "%d entries, %d versions and %d node credentials decrypt", len(entries), len(versions), len(secrets))
	}
}

func (d *Doctor) checkExpiry(subject string, notAfter, now time.Time) {
	within := d.ExpiringWithin
	if within == 0 {
		within = DefaultExpiringWithin
	}
	if within < 0 {
		return
	}
	day := "2006-01-02 15:04Z"
	switch {
	case !notAfter.After(now):
		d.add("expiry", Warn, subject, "expired on %s", notAfter.UTC().Format(day))
	case notAfter.Before(now.Add(within)):
		d.add("expiry", Warn, subject, "expires on %s (in %d days)", notAfter.UTC().Format(day), int(notAfter.Sub(now).Hours()/24))
	}
}

// WriteTable prints the report for people: one line per finding, problems first.
func (r Report) WriteTable(w io.Writer, verbose bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tSUBJECT\tDETAIL")
	shown := 0
	for _, want := range []Status{Fail, Warn, OK} {
		for _, c := range r.Checks {
			if c.Status != want || (c.Status == OK && !verbose) {
				continue
			}
			shown++
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Status, c.Check, c.Subject, c.Message)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "everything checked is fine"
	switch {
	case !r.OK:
		verdict = "problems found"
	case r.Warnings > 0:
		verdict = fmt.Sprintf("no problems, %d warning(s)", r.Warnings)
	}
	_, err := fmt.Fprintf(w, "%d check(s), %d shown: %s\n", len(r.Checks), shown, verdict)
	return err
}

// WriteJSON prints the report for scripts.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
