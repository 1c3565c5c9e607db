// Package catalog is the certificate catalogue's domain service: it validates entries
// (through internal/material), seals inline material (internal/envelope), persists through
// internal/repo in tenant-scoped transactions, and moves the tenant's generation with every
// change so the export job knows what to write. The HTTP layer and the subcommands call it;
// it knows nothing of HTTP.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/tenantkey"
)

// Sources of material.
const (
	SourceInline = "inline"
	SourceFile   = "file"
)

// MaxNameLen bounds an entry's name.
const MaxNameLen = 200

// MaxNotesLen bounds an entry's notes.
const MaxNotesLen = 4000

var slug = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidID reports whether id is a valid entry ID (and tenant slug).
func ValidID(id string) bool { return slug.MatchString(id) }

// Sentinel errors, besides repo's ErrNotFound / ErrDuplicate / ErrVersionMismatch.
var (
	// ErrInvalid wraps a *ValidationError.
	ErrInvalid = errors.New("invalid entry")
)

// ValidationError lists every problem of an entry at once, each naming its field.
type ValidationError struct {
	Issues []material.Issue
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		parts[i] = is.String()
	}
	return "invalid entry: " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// ReferencedError reports that deployed nodes still reference an entry.
type ReferencedError struct {
	EntryID    string
	References []repo.Reference
	Total      int
}

func (e *ReferencedError) Error() string {
	return fmt.Sprintf("entry %s is still referenced by %d deployed node field(s)", e.EntryID, e.Total)
}

// Unwrap makes errors.Is(err, repo.ErrReferenced) true.
func (e *ReferencedError) Unwrap() error { return repo.ErrReferenced }

// MaxConflictReferences is how many references a conflict lists; the rest are paged
// through References.
const MaxConflictReferences = 1000

// Service is the catalogue.
type Service struct {
	Pool *pgxpool.Pool
	// Keys seal each tenant's material under that tenant's keys.
	Keys  *tenantkey.Keys
	Roots material.Roots
	// KDF admits the key derivations of encrypted keys and PKCS#12 files (the server's
	// kdf.Budget), charged to the entry's tenant; nil derives at once.
	KDF    material.Budget
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Cache, when set, answers reads of tenants that did not change without the database.
	Cache *Cache
	// Chainer, when set, is told of every audit record written, to chain it soon; the
	// trail's reads chain what is pending anyway.
	Chainer *audit.Chainer
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Input is an entry as a client sends it. For updates, nil pointers mean "keep".
type Input struct {
	ID       string
	Name     *string
	Type     *string
	Source   *string
	Notes    *string
	CertPEM  secret.PEM
	KeyPEM   secret.PEM
	CertPath *string
	KeyPath  *string

	// Inline material in other encodings: DER certificates and key, or a PKCS#12 file
	// with its Passphrase; KeyPassphrase opens an encrypted KeyPEM or KeyDER. Passphrases
	// are used once to decrypt and never stored.
	CertDER       secret.Bytes
	KeyDER        secret.Bytes
	PKCS12        secret.Bytes
	Passphrase    secret.String
	KeyPassphrase secret.String
	// PassphrasePath is, for source file, the file holding the passphrase of a PKCS#12
	// certPath or an encrypted keyPath.
	PassphrasePath *string
	// VerifyWith, when set, is the ID of a ca-bundle of the tenant the pair's leaf is
	// checked against; the result comes back in Result.Verification.
	VerifyWith string
}

// hasMaterial reports whether the input carries any new material.
func (in *Input) hasMaterial() bool {
	return len(in.CertPEM) > 0 || len(in.KeyPEM) > 0 || in.CertPath != nil || in.KeyPath != nil ||
		len(in.CertDER) > 0 || len(in.KeyDER) > 0 || len(in.PKCS12) > 0 || in.PassphrasePath != nil
}

// encoded is the inline material of the input.
func (in *Input) encoded() material.Encoded {
	return material.Encoded{CertPEM: in.CertPEM, KeyPEM: in.KeyPEM, CertDER: in.CertDER, KeyDER: in.KeyDER,
		PKCS12: in.PKCS12, Passphrase: in.Passphrase, KeyPassphrase: in.KeyPassphrase}
}

// paths are the files of the input.
func (in *Input) paths() material.Paths {
	return material.Paths{Cert: str(in.CertPath), Key: str(in.KeyPath), Passphrase: str(in.PassphrasePath)}
}

// Result is a saved (or validated) entry and the warnings its material raised.
type Result struct {
	Entry    *repo.Entry
	Warnings []material.Issue
	Created  bool
	// Verification is the check against Input.VerifyWith; nil when none was asked for.
	Verification *Verification
}

// Verification is whether a pair chains to a ca-bundle of the catalogue.
type Verification struct {
	CABundle string
	material.Verification
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// checkFields validates the non-material fields of a complete entry.
func checkFields(id, name, typ, source, notes string) []material.Issue {
	var issues []material.Issue
	add := func(f, m string) { issues = append(issues, material.Issue{Field: f, Message: m}) }
	if !ValidID(id) {
		add("id", "must match ^[a-z0-9][a-z0-9_-]{0,63}$ (lower case letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters)")
	}
	switch n := utf8.RuneCountInString(name); {
	case strings.TrimSpace(name) == "":
		add("name", "is required")
	case n > MaxNameLen:
		add("name", fmt.Sprintf("is %d characters long; at most %d are allowed", n, MaxNameLen))
	}
	if !material.Kind(typ).Valid() {
		add("type", "must be one of ca-bundle, client-pair, server-pair")
	}
	if source != SourceInline && source != SourceFile {
		add("source", "must be inline or file")
	}
	if n := utf8.RuneCountInString(notes); n > MaxNotesLen {
		add("notes", fmt.Sprintf("is %d characters long; at most %d are allowed", n, MaxNotesLen))
	}
	if strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) || Deceptive(r) }) {
		add("name", "must not contain control, bidirectional override or line separator characters")
	}
	if strings.ContainsFunc(notes, func(r rune) bool {
		return (unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t') || Deceptive(r)
	}) {
		add("notes", "must not contain control characters other than tab and line breaks, nor bidirectional override or line separator characters")
	}
	for _, f := range []struct{ name, v string }{{"name", name}, {"notes", notes}} {
		if strings.Contains(f.v, "-----BEGIN") {
			add(f.name, "must not hold PEM (-----BEGIN ...): names and notes are stored and shown in clear. "+
				"Certificates go in certPem, private keys in keyPem, where they are sealed and never returned")
		}
	}
	return issues
}

// Deceptive reports characters that make text display other than it reads: the
// bidirectional controls (U+202E turns "gpj.exe" around) and the Unicode line and paragraph
// separators, which break a log line or a table row where no line break shows. Names and
// notes refuse them; the web UI shows any stored before that as escapes.
func Deceptive(r rune) bool {
	return unicode.Is(unicode.Bidi_Control, r) || unicode.In(r, unicode.Zl, unicode.Zp)
}

// prepared is an entry that passed validation, with its material parsed.
type prepared struct {
	entry    *repo.Entry
	material *material.Material
	warnings []material.Issue
	certPEM  secret.PEM
	keyPEM   secret.PEM
}

// prepare validates a complete entry and derives its metadata. The encoded material is
// used for inline entries, the paths for file entries. Inline material comes out
// normalised (certificates leaf first, the key unencrypted) in certPEM and keyPEM. Key
// derivations run under s.KDF and ctx; an error wrapping material.ErrNotAdmitted means
// they could not run now (nothing was judged), any other is a *ValidationError.
func (s *Service) prepare(ctx context.Context, tenant, id, name, typ, source, notes string, enc material.Encoded, paths material.Paths) (*prepared, error) {
	issues := checkFields(id, name, typ, source, notes)
	kind := material.Kind(typ)
	var (
		m    *material.Material
		errs []material.Issue
		norm *material.Normalized
	)
	add := func(field, msg string) { errs = append(errs, material.Issue{Field: field, Message: msg}) }
	switch {
	case !kind.Valid() || (source != SourceInline && source != SourceFile):
		// The material cannot be judged without a type and source.
	case source == SourceInline:
		for _, x := range []struct{ field, v string }{{"certPath", paths.Cert}, {"keyPath", paths.Key}, {"passphraseFile", paths.Passphrase}} {
			if x.v != "" {
				add(x.field, "is for source file; an inline entry carries certPem/keyPem, certDer/keyDer or pkcs12")
			}
		}
		mm, n, e, err := material.Decode(ctx, kind, enc, material.InlineFields, s.now(), material.KDF{Budget: s.KDF, Tenant: tenant})
		if err != nil {
			return nil, fmt.Errorf("validate entry %s: %w", id, err)
		}
		m, norm, errs = mm, n, append(errs, e...)
	default:
		for _, x := range []struct {
			field string
			set   bool
		}{{"certPem", len(enc.CertPEM) > 0}, {"keyPem", len(enc.KeyPEM) > 0}, {"certDer", len(enc.CertDER) > 0},
			{"keyDer", len(enc.KeyDER) > 0}, {"pkcs12", len(enc.PKCS12) > 0}} {
			if x.set {
				add(x.field, "is for source inline; a file entry carries certPath, keyPath and passphraseFile")
			}
		}
		if enc.Passphrase != "" || enc.KeyPassphrase != "" {
			add("passphraseFile", "a file entry reads its passphrase from passphraseFile; passphrase and keyPassphrase are for inline material")
		}
		mm, e, err := s.Roots.LoadFilesWith(ctx, kind, tenant, paths, material.PathFields, s.now(), s.KDF)
		if err != nil {
			return nil, fmt.Errorf("validate entry %s: %w", id, err)
		}
		m, errs = mm, append(errs, e...)
	}
	issues = append(issues, errs...)
	if len(issues) > 0 {
		return nil, &ValidationError{Issues: issues}
	}
	e := &repo.Entry{
		TenantID: tenant, ID: id, Name: name, Type: kind, Source: source, Notes: notes,
		Meta: m.Metadata,
	}
	p := &prepared{entry: e, material: m, warnings: m.Warnings}
	if source == SourceFile {
		e.CertPath, e.KeyPath, e.PassphrasePath = paths.Cert, paths.Key, paths.Passphrase
	} else {
		p.certPEM, p.keyPEM = norm.Cert, norm.Key
	}
	return p, nil
}

// keysReady loads tenant's keys (making its first one on its first write) before a write
// opens its transaction: the transaction locks the tenant's row, which storing a new
// tenant key, on a connection of its own, would wait for.
func (s *Service) keysReady(ctx context.Context, tenant string) error {
	_, err := s.Keys.Ring(ctx, tenant)
	return err
}

// seal encrypts inline material into the entry, under its tenant's keys.
func (s *Service) seal(ctx context.Context, p *prepared) error {
	e := p.entry
	e.Sealed = sealing.Pair{}
	if e.Source != SourceInline {
		return nil
	}
	ring, err := s.Keys.Ring(ctx, e.TenantID)
	if err != nil {
		return err
	}
	sealed, err := sealing.SealPair(ring, sealing.Place{Tenant: e.TenantID, EntryID: e.ID}, p.certPEM, p.keyPEM)
	if err != nil {
		return err
	}
	e.Sealed = sealed
	return nil
}

// Open decrypts an inline entry's stored material. It reloads the key ring once when the
// material names a master key this process does not hold (another replica rotated).
func (s *Service) Open(ctx context.Context, e *repo.Entry) (cert, key secret.PEM, err error) {
	if e.Source != SourceInline {
		return nil, nil, fmt.Errorf("open %s: not an inline entry", e.ID)
	}
	if len(e.Sealed.Cert) == 0 {
		return nil, nil, fmt.Errorf("open %s: the entry was read without its sealed material", e.ID)
	}
	ring, err := s.Keys.Ring(ctx, e.TenantID)
	if err != nil {
		return nil, nil, err
	}
	return sealing.OpenPair(ring, sealing.Place{Tenant: e.TenantID, EntryID: e.ID}, e.Sealed)
}

// Lookup returns the entries of tenant among ids (those that exist), with their sealed
// material, in one round trip: what a connection init needs of the references it follows.
func (s *Service) Lookup(ctx context.Context, tenant string, ids []string) ([]*repo.Entry, error) {
	if s.Cache != nil {
		return s.cachedLookup(ctx, tenant, ids)
	}
	return repo.LookupEntries(ctx, s.Pool, tenant, ids)
}

// Entries is the catalogue as a Resolver finds entries: tenant-scoped lookups through the
// cache, inline material opened on demand, and each entry stamped by its sealed material
// so the resolver parses it once per version of that material.
func (s *Service) Entries() resolver.Entries { return resolverEntries{s} }

type resolverEntries struct{ s *Service }

func (r resolverEntries) Lookup(ctx context.Context, tenant string, ids []string) ([]*resolver.Entry, error) {
	rows, err := r.s.Lookup(ctx, tenant, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*resolver.Entry, len(rows))
	for i, e := range rows {
		out[i] = &resolver.Entry{ID: e.ID, Type: e.Type, Source: e.Source, Stamp: e.Sealed.Stamp(), Handle: e,
			Files: material.Paths{Cert: e.CertPath, Key: e.KeyPath, Passphrase: e.PassphrasePath}}
	}
	return out, nil
}

func (r resolverEntries) Open(ctx context.Context, e *resolver.Entry) (cert, key secret.PEM, err error) {
	row, ok := e.Handle.(*repo.Entry)
	if !ok {
		return nil, nil, fmt.Errorf("open %s: not an entry of the catalogue", e.ID)
	}
	return r.s.Open(ctx, row)
}

// Validate parses an entry exactly as Create would and persists nothing. err is for
// material that could not be judged now (material.ErrNotAdmitted).
func (s *Service) Validate(ctx context.Context, tenant string, in Input) (meta *material.Metadata, warnings, errs []material.Issue, err error) {
	p, err := s.prepare(ctx, tenant, in.ID, str(in.Name), str(in.Type), str(in.Source), str(in.Notes), in.encoded(), in.paths())
	var ve *ValidationError
	if errors.As(err, &ve) {
		return nil, nil, ve.Issues, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return &p.material.Metadata, p.warnings, nil, nil
}

// Preview is what a validation derives: the metadata, warnings and verification, or the
// problems.
type Preview struct {
	Metadata     *material.Metadata
	Warnings     []material.Issue
	Errors       []material.Issue
	Verification *Verification
}

// ValidateWith is Validate with in.VerifyWith honoured; it reads the named bundle. Errors
// are for failures of the lookup itself and for material not judged now
// (material.ErrNotAdmitted).
func (s *Service) ValidateWith(ctx context.Context, tenant string, in Input) (*Preview, error) {
	p, err := s.prepare(ctx, tenant, in.ID, str(in.Name), str(in.Type), str(in.Source), str(in.Notes), in.encoded(), in.paths())
	var ve *ValidationError
	if errors.As(err, &ve) {
		return &Preview{Errors: ve.Issues}, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := s.verify(ctx, tenant, p, in.VerifyWith)
	if err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			return &Preview{Errors: ve.Issues}, nil
		}
		return nil, err
	}
	return &Preview{Metadata: &p.material.Metadata, Warnings: p.warnings, Verification: v}, nil
}

// Create validates, seals and stores a new entry.
func (s *Service) Create(ctx context.Context, tenant string, in Input) (*Result, error) {
	p, err := s.prepare(ctx, tenant, in.ID, str(in.Name), str(in.Type), str(in.Source), str(in.Notes), in.encoded(), in.paths())
	if err != nil {
		return nil, err
	}
	v, err := s.verify(ctx, tenant, p, in.VerifyWith)
	if err != nil {
		return nil, err
	}
	defer s.changed(tenant)
	if err := s.create(ctx, tenant, p); err != nil {
		return nil, err
	}
	s.logWarnings(tenant, p.entry.ID, p.warnings)
	return &Result{Entry: p.entry, Warnings: p.warnings, Created: true, Verification: v}, nil
}

func (s *Service) logWarnings(tenant, id string, ws []material.Issue) {
	for _, w := range ws {
		s.Logger.Warn("certificate warning", "tenant", tenant, "entry", id, "field", w.Field, "warning", w.Message)
	}
}

// Get returns one entry without its sealed material, in one round trip.
func (s *Service) Get(ctx context.Context, tenant, id string) (*repo.Entry, error) {
	if s.Cache != nil {
		return s.cachedGet(ctx, tenant, id)
	}
	return repo.GetEntry(ctx, s.Pool, tenant, id)
}

// List returns a page of entries and whether more follow, in one round trip. Listed
// entries carry no sealed material.
func (s *Service) List(ctx context.Context, tenant string, f repo.ListFilter) ([]*repo.Entry, bool, error) {
	if !storableText(f.Search) || !storableText(f.After) {
		// No stored text holds a NUL or bytes that are not UTF-8, and PostgreSQL cannot
		// even compare with them: nothing matches.
		return []*repo.Entry{}, false, nil
	}
	if s.Cache != nil {
		return s.cachedList(ctx, tenant, f)
	}
	return repo.ListEntries(ctx, s.Pool, tenant, f)
}

// storableText reports whether PostgreSQL can take s as text.
func storableText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
