// Package resolver turns a node's tls block into TLS material at connection init:
// BuildTLSConfig returns the *tls.Config a connection uses and Report says what each part
// resolves to. Store references are type-checked again; inline material of stored entries
// comes from an Entries source (the catalogue in the server) and is parsed once per
// version; file material, of stored file entries and direct paths alike, is read fresh on
// every call, with one retry for a rotation caught between its two renames, so
// cert-manager, certbot or a plain mv need no restart. Only the decode of file bytes is
// reused, while the bytes read are the very bytes last decoded. It knows the workspace model from
// internal/refs and nothing of where the workspace is stored.
package resolver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/secret"
)

// Origins of a resolved TLS part.
const (
	OriginRef    = "ref"
	OriginFile   = "file"
	OriginInline = "inline"
)

// ErrUnresolved wraps every failure to turn a tls block into material: a reference to a
// missing entry or one of the wrong type, an unreadable file, PEM that does not parse, a
// pair whose halves do not match.
var ErrUnresolved = errors.New("tls block does not resolve")

// sourceFile is the source of file-sourced entries (catalog.SourceFile).
const sourceFile = "file"

// DefaultRetryPause is how long a file pair that does not match waits before it is read
// again: long enough for the second mv of a rotation, short enough for a connection init.
const DefaultRetryPause = 100 * time.Millisecond

// Entry is a catalogue entry as a connection init needs it: its type, where a file entry's
// material lives, and what tells one version of an inline entry's material from another.
// Sources build it from their own records; the resolver reads nothing else of them.
type Entry struct {
	ID     string
	Type   material.Kind
	Source string // "inline" or "file"
	// Files are a file entry's paths.
	Files material.Paths
	// Stamp identifies an inline entry's stored material: two lookups of one tenant's
	// entry ID with one Stamp hold the same material, so its parse is reused. The server
	// takes it from the sealed values (sealing.StampOf); a runtime from its file.
	Stamp Stamp
	// Handle is whatever the source needs to Open the entry; the resolver only hands it back.
	Handle any
}

// Stamp identifies a version of an entry's stored material (see Entry.Stamp).
type Stamp [32]byte

// Entries is where a Resolver finds the entries that store references name.
type Entries interface {
	// Lookup returns the entries of tenant among ids (those that exist).
	Lookup(ctx context.Context, tenant string, ids []string) ([]*Entry, error)
	// Open returns an inline entry's certificate chain and key.
	Open(ctx context.Context, e *Entry) (cert, key secret.PEM, err error)
}

// Resolver turns tls blocks into TLS material at connection init.
type Resolver struct {
	// Entries reaches the entries references name and opens their inline material.
	Entries Entries
	// Roots confines file paths (LOOPZE_FILE_ROOTS).
	Roots material.Roots
	// KDF admits the key derivations of file material (a PKCS#12, an encrypted key): the
	// server's budget. Nil, as in a runtime, derives at once.
	KDF    material.Budget
	Logger *slog.Logger
	// Now dates expiry warnings; nil means time.Now.
	Now func() time.Time
	// RetryPause is the pause before a file pair that failed to load is read once more (a
	// rotation caught between its two renames); zero means DefaultRetryPause.
	RetryPause time.Duration
	// Wait pauses for d or until ctx ends; nil uses a timer. Tests hook the rotation in here.
	Wait func(ctx context.Context, d time.Duration) error

	// parsed caches the material of stored inline entries by (tenant, ID, stamp): every
	// change of the material changes its stamp, so an entry is decrypted and parsed once
	// per version of its material, not once per connection.
	//
	// files caches the decoded material of file parts by their paths, with the SHA-256 of
	// the bytes it was decoded from. File material is still read from disk at every call;
	// only when the bytes read are those last decoded is the decode skipped.
	//
	// Reads of both take no lock: with more callers than processors, a caller descheduled
	// while holding a lock would stall every connection init behind it.
	parsed cache[inlineKey, parsedEntry]
	files  cache[fileKey, fileEntry]
}

// cache is a bounded concurrent map whose loads take no lock. When it holds more than
// maxParsed entries, an arbitrary one makes room, so a working set larger than the cache
// costs a parse on a fraction of calls, never all.
type cache[K comparable, V any] struct {
	m sync.Map
	n atomic.Int64
}

func (c *cache[K, V]) load(k K) (V, bool) {
	v, ok := c.m.Load(k)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

func (c *cache[K, V]) store(k K, v V) {
	if _, loaded := c.m.Swap(k, v); loaded || c.n.Add(1) <= maxParsed {
		return
	}
	c.m.Range(func(key, _ any) bool {
		if key.(K) == k {
			return true
		}
		if _, ok := c.m.LoadAndDelete(key); ok {
			c.n.Add(-1)
		}
		return false
	})
}

// fileKey identifies a file part: whose, what kind, which files, and the field names its
// issues and warnings carry.
type fileKey struct {
	tenant string
	kind   material.Kind
	paths  material.Paths
	fields material.Fields
}

// fileEntry is a file part's material and the SHA-256 (material.FileSet.Sum) of the bytes
// it was decoded from.
type fileEntry struct {
	sum [32]byte
	parsedEntry
}

// parsedEntry is cached material, good until a certificate's validity boundary passes
// (the expiry warnings must then be computed again).
type parsedEntry struct {
	m     *material.Material
	until time.Time
}

// nextBoundary is the first NotBefore or NotAfter of m's certificates after now.
func nextBoundary(m *material.Material, now time.Time) time.Time {
	until := now.Add(24 * time.Hour)
	for _, c := range m.Certs {
		for _, b := range []time.Time{c.NotBefore, c.NotAfter} {
			if b.After(now) && b.Before(until) {
				until = b
			}
		}
	}
	return until
}

type inlineKey struct {
	tenant, id string
	stamp      Stamp
}

// maxParsed bounds each cache of parsed material (see cache).
const maxParsed = 16384

func (r *Resolver) inline(ctx context.Context, tenant string, e *Entry, k material.Kind) (*material.Material, error) {
	key := inlineKey{tenant, e.ID, e.Stamp}
	now := r.now()
	pe, ok := r.parsed.load(key)
	if ok && now.Before(pe.until) {
		return pe.m, nil
	}
	cert, keyPEM, err := r.Entries.Open(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("open entry %s: %w", e.ID, err)
	}
	m, issues := material.Inspect(k, cert, keyPEM, material.PEMFields, now)
	if len(issues) > 0 {
		return nil, fmt.Errorf("entry %s: %s", e.ID, joinIssues(issues))
	}
	r.parsed.store(key, parsedEntry{m: m, until: nextBoundary(m, now)})
	return m, nil
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Resolver) wait(ctx context.Context) error {
	d := r.RetryPause
	if d <= 0 {
		d = DefaultRetryPause
	}
	if r.Wait != nil {
		return r.Wait(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PartReport is what one TLS part resolves to now. It never carries PEM.
type PartReport struct {
	// Part is caBundle, clientCert or serverCert.
	Part string
	// Origin is ref, file or inline.
	Origin string
	// Ref is the entry named, for origin ref; EntrySource is that entry's source.
	Ref         string
	EntrySource string
	// CertPath and KeyPath are the files read, for origin file and for file entries.
	CertPath, KeyPath string
	// Metadata of the leaf certificate; zero when the part does not resolve.
	FingerprintSHA256 string
	Subject           string
	NotAfter          time.Time
	// Warnings do not stop a connection (expiry, weak keys, chain breaks).
	Warnings []string
	// Error says why the part does not resolve now; empty when it does.
	Error string
}

// resolved is one part's material and report.
type resolved struct {
	part     refs.Part
	material *material.Material
	report   PartReport
	err      error
}

// Report resolves every configured part of block and reports each, whether it resolves
// or not. Inline PEM must be present in block (not a {"set": true} marker).
func (r *Resolver) Report(ctx context.Context, tenant string, block *refs.TLS) ([]PartReport, error) {
	out, _, err := r.Check(ctx, tenant, block)
	return out, err
}

// Check is Report plus, when block has a client pair and a CA bundle that both resolve,
// whether the pair's leaf chains to that bundle (nil otherwise): a node whose own CA
// bundle does not vouch for its client certificate usually has the wrong one of them.
func (r *Resolver) Check(ctx context.Context, tenant string, block *refs.TLS) ([]PartReport, *material.Verification, error) {
	parts, err := r.resolveInto(ctx, tenant, block, nil)
	if err != nil {
		return nil, nil, err
	}
	out := make([]PartReport, 0, len(parts))
	var bundle, client *material.Material
	for _, p := range parts {
		out = append(out, p.report)
		if p.err != nil {
			continue
		}
		switch p.part.Kind {
		case material.CABundle:
			bundle = p.material
		case material.ClientPair:
			client = p.material
		}
	}
	if bundle == nil || client == nil {
		return out, nil, nil
	}
	v := material.VerifyWith(client, bundle, r.now())
	return out, &v, nil
}

// BuildTLSConfig turns a tls block into a *tls.Config for one connection init:
//   - caBundle: RootCAs (verifying the server) and ClientCAs (verifying clients, which a
//     block with a server part then requires);
//   - clientCert: presented to servers that ask, through GetClientCertificate;
//   - serverCert: Certificates, for a listening node.
//
// Expired material is logged as a warning and used anyway. Any part that does not resolve
// fails the whole call with an error wrapping ErrUnresolved that names the part and why,
// never the material. Inline PEM must be present in block (not a {"set": true} marker).
func (r *Resolver) BuildTLSConfig(ctx context.Context, tenant string, block *refs.TLS) (*tls.Config, error) {
	var buf [3]resolved
	parts, err := r.resolveInto(ctx, tenant, block, buf[:0])
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if block != nil {
		cfg.ServerName = block.ServerName
	}
	hasServer := false
	for _, p := range parts {
		if p.err != nil {
			return nil, p.err
		}
		for _, w := range p.report.Warnings {
			r.Logger.Warn("tls material warning", "tenant", tenant, "part", p.part.Name, "origin", p.report.Origin,
				"ref", p.report.Ref, "cert_path", p.report.CertPath, "warning", w)
		}
		switch p.part.Kind {
		case material.CABundle:
			pool := p.material.CertPool()
			cfg.RootCAs, cfg.ClientCAs = pool, pool
		case material.ClientPair:
			cert, err := p.material.TLSCertificate()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.part.Name, err)
			}
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		case material.ServerPair:
			cert, err := p.material.TLSCertificate()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.part.Name, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
			hasServer = true
		}
	}
	if hasServer && cfg.ClientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// resolveInto loads every configured part of block, appending them to out. Failures of one
// part are recorded on it; the error is for failures of the lookup itself (the database).
func (r *Resolver) resolveInto(ctx context.Context, tenant string, block *refs.TLS, out []resolved) ([]resolved, error) {
	if block == nil {
		return out, nil
	}
	var ids []string
	for _, p := range refs.Parts {
		if ref := block.Spec(p).Ref; ref != "" {
			ids = append(ids, ref)
		}
	}
	var entries []*Entry
	if len(ids) > 0 {
		var err error
		if entries, err = r.Entries.Lookup(ctx, tenant, ids); err != nil {
			return nil, fmt.Errorf("resolve tls references: %w", err)
		}
	}
	for _, p := range refs.Parts {
		s := block.Spec(p)
		if s.Empty() {
			continue
		}
		out = append(out, resolved{part: p, report: PartReport{Part: p.Name}})
		res := &out[len(out)-1]
		res.material, res.err = r.resolvePart(ctx, tenant, p, s, entries, &res.report)
		if errors.Is(res.err, material.ErrNotAdmitted) {
			// Not judged, as a lookup that failed: the whole call is tried again later.
			return nil, fmt.Errorf("resolve tls.%s: %w", p.Name, res.err)
		}
		if res.err != nil {
			res.report.Error = res.err.Error()
			res.err = fmt.Errorf("%s: %w: %w", p.Name, ErrUnresolved, res.err)
		} else {
			m := res.material.Metadata
			res.report.FingerprintSHA256, res.report.Subject, res.report.NotAfter = m.FingerprintSHA256, m.Subject, m.NotAfter.UTC()
			for _, w := range res.material.Warnings {
				res.report.Warnings = append(res.report.Warnings, w.String())
			}
		}
	}
	return out, nil
}

// entryOf is the entry of list with ID id, the last one when several are.
func entryOf(list []*Entry, id string) *Entry {
	var found *Entry
	for _, e := range list {
		if e.ID == id {
			found = e
		}
	}
	return found
}

func (r *Resolver) resolvePart(ctx context.Context, tenant string, p refs.Part, s *refs.PartSpec, entries []*Entry, rep *PartReport) (*material.Material, error) {
	switch {
	case s.Ref != "":
		rep.Origin, rep.Ref = OriginRef, s.Ref
		e := entryOf(entries, s.Ref)
		if e == nil {
			return nil, fmt.Errorf("tls.%s names %q, which is no entry of this tenant's certificate store", p.Ref, s.Ref)
		}
		if e.Type != p.Kind {
			return nil, fmt.Errorf("tls.%s names %q, a %s; it must name a %s", p.Ref, s.Ref, e.Type, p.Kind)
		}
		rep.EntrySource = e.Source
		if e.Source == sourceFile {
			rep.CertPath, rep.KeyPath = e.Files.Cert, e.Files.Key
			return r.loadFiles(ctx, tenant, p.Kind, e.Files, material.PathFields)
		}
		return r.inline(ctx, tenant, e, p.Kind)
	case s.CertFile != "" || s.KeyFile != "":
		rep.Origin, rep.CertPath, rep.KeyPath = OriginFile, s.CertFile, s.KeyFile
		return r.loadFiles(ctx, tenant, p.Kind, material.Paths{Cert: s.CertFile, Key: s.KeyFile}, fileFields(p))
	default:
		rep.Origin = OriginInline
		var cert, key secret.PEM
		for _, x := range []struct {
			v     *refs.Value
			field string
			dst   *secret.PEM
		}{{s.CertPEM, p.CertPEM, &cert}, {s.KeyPEM, p.KeyPEM, &key}} {
			if x.v == nil {
				continue
			}
			if x.v.Keep {
				return nil, fmt.Errorf("tls.%s: the stored value was not loaded", x.field)
			}
			*x.dst = secret.PEM(x.v.Text)
		}
		m, issues := material.Inspect(p.Kind, cert, key,
			material.Fields{Cert: "tls." + p.CertPEM, Key: "tls." + keyPEMField(p)}, r.now())
		if len(issues) > 0 {
			return nil, errors.New(joinIssues(issues))
		}
		return m, nil
	}
}

// partFileFields are the field names of each part's direct file paths, built once.
var partFileFields = func() []material.Fields {
	out := make([]material.Fields, len(refs.Parts))
	for i, p := range refs.Parts {
		out[i] = material.Fields{Cert: "tls." + p.CertFile, Key: "tls." + keyField(p)}
	}
	return out
}()

// fileFields names the fields of p's direct file paths: "tls.clientCertFile", ...
func fileFields(p refs.Part) material.Fields {
	for i, rp := range refs.Parts {
		if rp == p {
			return partFileFields[i]
		}
	}
	return material.Fields{Cert: "tls." + p.CertFile, Key: "tls." + keyField(p)}
}

func keyField(p refs.Part) string {
	if p.KeyFile == "" {
		return "keyFile"
	}
	return p.KeyFile
}

func keyPEMField(p refs.Part) string {
	if p.KeyPEM == "" {
		return "keyPem"
	}
	return p.KeyPEM
}

// loadFiles reads a file part fresh. When it fails for a reason a rotation in progress
// explains (the certificate already renamed, the key not yet; a file half written), it
// waits once and reads again; only the second failure is an error.
func (r *Resolver) loadFiles(ctx context.Context, tenant string, k material.Kind, paths material.Paths, f material.Fields) (*material.Material, error) {
	m, issues, err := r.loadFilesOnce(ctx, tenant, k, paths, f)
	if err != nil {
		return nil, err
	}
	if len(issues) == 0 {
		return m, nil
	}
	if !retryable(issues) {
		return nil, errors.New(joinIssues(issues))
	}
	r.Logger.Debug("tls files do not load; reading again after a pause", "tenant", tenant,
		"cert_path", paths.Cert, "key_path", paths.Key, "problem", joinIssues(issues))
	if err := r.wait(ctx); err != nil {
		return nil, fmt.Errorf("%s (retry cancelled: %w)", joinIssues(issues), err)
	}
	m, issues, err = r.loadFilesOnce(ctx, tenant, k, paths, f)
	if err != nil {
		return nil, err
	}
	if len(issues) > 0 {
		return nil, errors.New(joinIssues(issues))
	}
	return m, nil
}

// loadFilesOnce reads the files of a part now and decodes them, unless the bytes read are
// the very bytes (by SHA-256) the last decode of these paths saw and no validity boundary
// has passed since: the material is then the same, and the earlier result is returned.
// Only what loads is remembered; a read that fails, or bytes that do not decode, are
// reported as they are every time. err (material.ErrNotAdmitted) means the decode's key
// derivations could not run now.
func (r *Resolver) loadFilesOnce(ctx context.Context, tenant string, k material.Kind, paths material.Paths, f material.Fields) (*material.Material, []material.Issue, error) {
	now := r.now()
	files := r.Roots.ReadFiles(k, tenant, paths, f)
	if len(files.Issues()) > 0 {
		return files.Decode(ctx, now, r.KDF)
	}
	key := fileKey{tenant: tenant, kind: k, paths: paths, fields: f}
	sum := files.Sum()
	fe, ok := r.files.load(key)
	if ok && fe.sum == sum && now.Before(fe.until) {
		return fe.m, nil, nil
	}
	m, issues, err := files.Decode(ctx, now, r.KDF)
	if err != nil || len(issues) > 0 {
		return nil, issues, err
	}
	r.files.store(key, fileEntry{sum: sum, parsedEntry: parsedEntry{m: m, until: nextBoundary(m, now)}})
	return m, nil, nil
}

// retryable reports whether reading again could help: a path that is relative or outside
// the roots stays so.
func retryable(issues []material.Issue) bool {
	for _, is := range issues {
		if strings.Contains(is.Message, material.ErrOutsideRoots.Error()) || strings.Contains(is.Message, material.ErrRelativePath.Error()) {
			return false
		}
	}
	return true
}

func joinIssues(issues []material.Issue) string {
	parts := make([]string, len(issues))
	for i, is := range issues {
		parts[i] = is.String()
	}
	return strings.Join(parts, "; ")
}
