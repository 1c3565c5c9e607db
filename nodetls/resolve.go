package nodetls

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/secret"
)

// Origins of a resolved part, as Part.Origin reports them.
const (
	// OriginRef is a certificate-store reference (caBundleRef, clientCertRef,
	// serverCertRef, an opcua-server node's certRef).
	OriginRef = "ref"
	// OriginFile is a direct path in the tls block (caBundleFile, clientCertFile, ...).
	OriginFile = "file"
	// OriginInline is inline PEM in the tls block.
	OriginInline = "inline"
)

// Part is what one TLS part of a node resolves to now. It never carries PEM.
type Part struct {
	// Name is caBundle, clientCert or serverCert.
	Name string `json:"part"`
	// Field is the property that configures it, e.g. "tls.clientCertRef" or "certRef".
	Field string `json:"field"`
	// Origin is OriginRef, OriginFile or OriginInline.
	Origin string `json:"origin"`
	// Ref is the entry named, for OriginRef; EntrySource is its source (inline or file).
	Ref         string `json:"ref,omitempty"`
	EntrySource string `json:"entrySource,omitempty"`
	// CertPath and KeyPath are the files read, for OriginFile and file-sourced entries.
	CertPath string `json:"certPath,omitempty"`
	KeyPath  string `json:"keyPath,omitempty"`
	// Metadata of the leaf certificate; zero when the part does not resolve.
	FingerprintSHA256 string    `json:"fingerprintSha256,omitempty"`
	Subject           string    `json:"subject,omitempty"`
	Issuer            string    `json:"issuer,omitempty"`
	NotAfter          time.Time `json:"notAfter,omitzero"`
	// Warnings do not stop a connection (expiry, weak keys, chain breaks).
	Warnings []string `json:"warnings,omitempty"`
	// Error says why the part does not resolve now; empty when it does.
	Error string `json:"error,omitempty"`

	kind     material.Kind
	material *material.Material
	err      error
}

// Config returns the *tls.Config for a connection init of node nodeID in flow flowID, as
// the deployed workspace in the file configures it:
//   - caBundle: RootCAs (verifying the server) and ClientCAs (verifying clients, which a
//     block with a serverCert part then requires);
//   - clientCert: presented to servers that ask, through GetClientCertificate;
//   - serverCert: Certificates, for a listening node.
//
// Store references are type-checked; inline material comes from the snapshot; file
// material (file-sourced entries and direct *File paths) is read from disk on every call.
// An opcua-server node's certRef is its clientCert part. Call it for every new
// connection: a connection keeps the material it was opened with.
func (s *Store) Config(ctx context.Context, flowID, nodeID string) (*tls.Config, error) {
	snap, n, err := s.node(flowID, nodeID)
	if err != nil {
		return nil, err
	}
	parts, err := s.resolve(ctx, snap, n.EffectiveTLS(), nodeWhere(flowID, n))
	if err != nil {
		return nil, err
	}
	return s.build(snap.tenant, n.EffectiveTLS(), parts)
}

// ConfigFor is Config for a tls block given as JSON, as a node carries it
// ({"caBundleRef": "...", "clientCertFile": "...", ...}). Inline PEM must be present as
// strings; references resolve in the file's tenant.
func (s *Store) ConfigFor(ctx context.Context, block json.RawMessage) (*tls.Config, error) {
	snap, err := s.current()
	if err != nil {
		return nil, err
	}
	var t refs.TLS
	if err := json.Unmarshal(block, &t); err != nil {
		return nil, fmt.Errorf("tls block: %w", err)
	}
	parts, err := s.resolve(ctx, snap, &t, where{prefix: "tls block"})
	if err != nil {
		return nil, err
	}
	return s.build(snap.tenant, &t, parts)
}

// Describe reports what each configured part of a node's tls block resolves to now,
// whether it resolves or not (Part.Error). It reads files as Config does.
func (s *Store) Describe(ctx context.Context, flowID, nodeID string) ([]Part, error) {
	snap, n, err := s.node(flowID, nodeID)
	if err != nil {
		return nil, err
	}
	return s.resolve(ctx, snap, n.EffectiveTLS(), nodeWhere(flowID, n))
}

func (s *Store) node(flowID, nodeID string) (*snapshot, *refs.Node, error) {
	snap, err := s.current()
	if err != nil {
		return nil, nil, err
	}
	n := snap.nodes[nodeKey{flowID, nodeID}]
	if n == nil {
		return nil, nil, fmt.Errorf("flow %s, node %s: %w (tenant %s, generation %d)", flowID, nodeID, ErrNodeNotFound, snap.tenant, snap.generation)
	}
	if n.EffectiveTLS() == nil {
		return nil, nil, fmt.Errorf("flow %s, node %s: %w", flowID, nodeID, ErrNoTLS)
	}
	return snap, n, nil
}

// where names the block in errors: "flow F, node N" and whether certRef stands for the
// clientCert part.
type where struct {
	prefix  string
	certRef bool
}

func nodeWhere(flowID string, n *refs.Node) where {
	w := where{prefix: fmt.Sprintf("flow %s, node %s", flowID, n.ID)}
	if n.Type == refs.TypeOPCUAServer {
		ref, _, _ := n.Prop(refs.PropCertRef)
		w.certRef = ref != ""
	}
	return w
}

func (w where) field(p refs.Part, name string) string {
	if w.certRef && p.Kind == material.ClientPair && name == p.Ref {
		return refs.PropCertRef
	}
	return "tls." + name
}

// resolve loads every configured part of block. A part that does not resolve fails the
// call with an error naming where, the field and why.
func (s *Store) resolve(ctx context.Context, snap *snapshot, block *refs.TLS, w where) ([]Part, error) {
	if block == nil {
		return nil, nil
	}
	var out []Part
	for _, p := range refs.Parts {
		spec := block.Spec(p)
		if empty(spec) {
			continue
		}
		part := Part{Name: p.Name, kind: p.Kind}
		part.material, part.err = s.resolvePart(ctx, snap, p, spec, w, &part)
		if part.err != nil {
			part.Error = part.err.Error()
			part.err = fmt.Errorf("%s: %s: %w: %w", w.prefix, p.Name, ErrUnresolved, part.err)
		} else {
			m := part.material.Metadata
			part.FingerprintSHA256, part.Subject, part.Issuer, part.NotAfter = m.FingerprintSHA256, m.Subject, m.Issuer, m.NotAfter.UTC()
			for _, warn := range part.material.Warnings {
				part.Warnings = append(part.Warnings, warn.String())
			}
		}
		out = append(out, part)
	}
	return out, nil
}

func empty(s *refs.PartSpec) bool {
	return s.Ref == "" && s.CertFile == "" && s.KeyFile == "" && s.CertPEM == nil && s.KeyPEM == nil
}

func (s *Store) resolvePart(ctx context.Context, snap *snapshot, p refs.Part, spec *refs.PartSpec, w where, out *Part) (*material.Material, error) {
	now := s.now()
	switch {
	case spec.Ref != "":
		field := w.field(p, p.Ref)
		out.Origin, out.Ref, out.Field = OriginRef, spec.Ref, field
		e := snap.entries[spec.Ref]
		if e == nil {
			return nil, fmt.Errorf("%s names %q: %w", field, spec.Ref, ErrEntryNotFound)
		}
		if material.Kind(e.Type) != p.Kind {
			return nil, fmt.Errorf("%s names %q, a %s; it must name a %s: %w", field, spec.Ref, e.Type, p.Kind, ErrWrongType)
		}
		out.EntrySource = e.Source
		if e.Source == catalog.SourceFile {
			out.CertPath, out.KeyPath = e.CertPath, e.KeyPath
			return s.loadFiles(ctx, snap.tenant, p.Kind, e.CertPath, e.KeyPath,
				material.Fields{Cert: "entry " + e.ID + " certPath", Key: "entry " + e.ID + " keyPath"})
		}
		return snap.cached("entry\x00"+e.ID, now, func() (*material.Material, error) { return inspectEntry(p.Kind, e, now) })
	case spec.CertFile != "" || spec.KeyFile != "":
		out.Origin, out.CertPath, out.KeyPath, out.Field = OriginFile, spec.CertFile, spec.KeyFile, "tls."+p.CertFile
		keyField := p.KeyFile
		if keyField == "" {
			keyField = "keyFile"
		}
		return s.loadFiles(ctx, snap.tenant, p.Kind, spec.CertFile, spec.KeyFile,
			material.Fields{Cert: "tls." + p.CertFile, Key: "tls." + keyField})
	default:
		out.Origin, out.Field = OriginInline, "tls."+p.CertPEM
		var cert, key secret.PEM
		for _, x := range []struct {
			v     *refs.Value
			field string
			dst   *secret.PEM
		}{{spec.CertPEM, p.CertPEM, &cert}, {spec.KeyPEM, p.KeyPEM, &key}} {
			if x.v == nil {
				continue
			}
			if x.v.Keep {
				return nil, fmt.Errorf("tls.%s: the stored value is not in this block (it shows as {\"set\": true})", x.field)
			}
			*x.dst = secret.PEM(x.v.Text)
		}
		keyField := p.KeyPEM
		if keyField == "" {
			keyField = "keyPem"
		}
		inspect := func() (*material.Material, error) {
			m, issues := material.Inspect(p.Kind, cert, key, material.Fields{Cert: "tls." + p.CertPEM, Key: "tls." + keyField}, now)
			if len(issues) > 0 {
				return nil, errors.New(joinIssues(issues))
			}
			return m, nil
		}
		if w.prefix == "tls block" { // a caller's block: not part of the snapshot
			return inspect()
		}
		return snap.cached("node\x00"+w.prefix+"\x00"+p.Name, now, inspect)
	}
}

func inspectEntry(k material.Kind, e *fileexport.Entry, now time.Time) (*material.Material, error) {
	m, issues := material.Inspect(k, secret.PEM(e.CertPEM), secret.PEM(e.KeyPEM),
		material.Fields{Cert: "entry " + e.ID + " certPem", Key: "entry " + e.ID + " keyPem"}, now)
	if len(issues) > 0 {
		return nil, errors.New(joinIssues(issues))
	}
	return m, nil
}

// loadFiles reads a file part fresh. When it fails for a reason a rotation in progress
// explains (the certificate renamed already, the key not yet; a file half written), it
// waits once and reads again; only the second failure is an error.
func (s *Store) loadFiles(ctx context.Context, tenant string, k material.Kind, certPath, keyPath string, f material.Fields) (*material.Material, error) {
	m, issues := s.roots.LoadFiles(k, tenant, certPath, keyPath, f, s.now())
	if len(issues) == 0 {
		return m, nil
	}
	if !retryable(issues) {
		return nil, errors.New(joinIssues(issues))
	}
	if err := s.pause(ctx); err != nil {
		return nil, fmt.Errorf("%s (retry cancelled: %w)", joinIssues(issues), err)
	}
	m, issues = s.roots.LoadFiles(k, tenant, certPath, keyPath, f, s.now())
	if len(issues) > 0 {
		return nil, errors.New(joinIssues(issues))
	}
	return m, nil
}

// retryable reports whether reading again could help: a relative path or one outside the
// roots stays so.
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

func (s *Store) pause(ctx context.Context) error {
	d := s.opts.RetryPause
	if d <= 0 {
		d = DefaultRetryPause
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

func (s *Store) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

// build assembles the *tls.Config from resolved parts; the first part that does not
// resolve fails the call.
func (s *Store) build(tenant string, block *refs.TLS, parts []Part) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if block != nil {
		cfg.ServerName = block.ServerName
	}
	hasServer := false
	for _, p := range parts {
		if p.err != nil {
			return nil, p.err
		}
		for _, w := range p.Warnings {
			s.opts.Logger.Warn("tls material warning", "tenant", tenant, "part", p.Name, "origin", p.Origin,
				"ref", p.Ref, "cert_path", p.CertPath, "warning", w)
		}
		switch p.kind {
		case material.CABundle:
			pool := p.material.CertPool()
			cfg.RootCAs, cfg.ClientCAs = pool, pool
		case material.ClientPair:
			cert, err := p.material.TLSCertificate()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		case material.ServerPair:
			cert, err := p.material.TLSCertificate()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
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

func cutTLS(name string) (string, bool) { return strings.CutPrefix(name, "tls.") }

func secretString(b []byte) secret.String { return secret.String(b) }
