package nodetls

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/secret"
)

// Origins of a resolved part, as Part.Origin reports them.
const (
	// OriginRef is a certificate-store reference (caBundleRef, clientCertRef,
	// serverCertRef, an opcua-server node's certRef).
	OriginRef = resolver.OriginRef
	// OriginFile is a direct path in the tls block (caBundleFile, clientCertFile, ...).
	OriginFile = resolver.OriginFile
	// OriginInline is inline PEM in the tls block.
	OriginInline = resolver.OriginInline
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
	NotAfter          time.Time `json:"notAfter,omitzero"`
	// Warnings do not stop a connection (expiry, weak keys, chain breaks).
	Warnings []string `json:"warnings,omitempty"`
	// Error says why the part does not resolve now; empty when it does.
	Error string `json:"error,omitempty"`
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
	snap, n, err := s.node(ctx, flowID, nodeID)
	if err != nil {
		return nil, err
	}
	return s.build(ctx, snap, n.EffectiveTLS(), nodeWhere(flowID, n))
}

// ConfigFor is Config for a tls block given as JSON, as a node carries it
// ({"caBundleRef": "...", "clientCertFile": "...", ...}). Inline PEM must be present as
// strings; references resolve in the file's tenant.
func (s *Store) ConfigFor(ctx context.Context, block json.RawMessage) (*tls.Config, error) {
	snap, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	var t refs.TLS
	if err := json.Unmarshal(block, &t); err != nil {
		return nil, fmt.Errorf("tls block: %w", err)
	}
	return s.build(ctx, snap, &t, where{block: true})
}

// Describe reports what each configured part of a node's tls block resolves to now,
// whether it resolves or not (Part.Error). It reads files as Config does.
func (s *Store) Describe(ctx context.Context, flowID, nodeID string) ([]Part, error) {
	snap, n, err := s.node(ctx, flowID, nodeID)
	if err != nil {
		return nil, err
	}
	block, w := n.EffectiveTLS(), nodeWhere(flowID, n)
	reports, err := snap.resolver.Report(ctx, snap.tenant, block)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", w.prefix(), err)
	}
	out := make([]Part, 0, len(reports))
	for _, r := range reports {
		p := Part{Name: r.Part, Origin: r.Origin, Ref: r.Ref, EntrySource: r.EntrySource, CertPath: r.CertPath,
			KeyPath: r.KeyPath, FingerprintSHA256: r.FingerprintSHA256, Subject: r.Subject, NotAfter: r.NotAfter,
			Warnings: r.Warnings, Error: r.Error}
		for _, rp := range refs.Parts {
			if rp.Name == r.Part {
				p.Field = w.field(rp, block.Spec(rp))
				if err := snap.checkRef(rp, block.Spec(rp), w); err != nil {
					p.Error = err.Error()
				}
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func (s *Store) node(ctx context.Context, flowID, nodeID string) (*snapshot, *refs.Node, error) {
	snap, err := s.current(ctx)
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

// build type-checks the block's references against the snapshot, then has the server's
// resolver turn it into a config.
func (s *Store) build(ctx context.Context, snap *snapshot, block *refs.TLS, w where) (*tls.Config, error) {
	for _, p := range refs.Parts {
		if err := snap.checkRef(p, block.Spec(p), w); err != nil {
			return nil, fmt.Errorf("%s: %s: %w: %w", w.prefix(), p.Name, ErrUnresolved, err)
		}
	}
	cfg, err := snap.resolver.BuildTLSConfig(ctx, snap.tenant, block)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", w.prefix(), err)
	}
	return cfg, nil
}

// where names the block in errors, "flow F, node N" (or "tls block" for ConfigFor), and
// says whether certRef stands for the clientCert part. The names are only put together
// when there is an error to name them in.
type where struct {
	flowID, nodeID string
	block          bool
	certRef        bool
}

func (w where) prefix() string {
	if w.block {
		return "tls block"
	}
	return "flow " + w.flowID + ", node " + w.nodeID
}

func nodeWhere(flowID string, n *refs.Node) where {
	w := where{flowID: flowID, nodeID: n.ID}
	if n.Type == refs.TypeOPCUAServer {
		ref, _, _ := n.Prop(refs.PropCertRef)
		w.certRef = ref != ""
	}
	return w
}

// field is the property that configures part p of spec.
func (w where) field(p refs.Part, spec *refs.PartSpec) string {
	switch {
	case spec.Ref != "" && w.certRef && p.Kind == material.ClientPair:
		return refs.PropCertRef
	case spec.Ref != "":
		return "tls." + p.Ref
	case spec.CertFile != "" || spec.KeyFile != "":
		return "tls." + p.CertFile
	}
	return "tls." + p.CertPEM
}

// checkRef reports a reference to an entry the file does not hold or of the wrong type,
// with the sentinel callers test for.
func (snap *snapshot) checkRef(p refs.Part, spec *refs.PartSpec, w where) error {
	if spec.Ref == "" {
		return nil
	}
	e := snap.entries[spec.Ref]
	if e == nil {
		return fmt.Errorf("%s names %q: %w", w.field(p, spec), spec.Ref, ErrEntryNotFound)
	}
	if material.Kind(e.Type) != p.Kind {
		return fmt.Errorf("%s names %q, a %s; it must name a %s: %w", w.field(p, spec), spec.Ref, e.Type, p.Kind, ErrWrongType)
	}
	return nil
}

// Lookup implements resolver.Entries over the snapshot.
func (snap *snapshot) Lookup(_ context.Context, _ string, ids []string) ([]*resolver.Entry, error) {
	out := make([]*resolver.Entry, 0, len(ids))
	for _, id := range ids {
		if e := snap.lookup[id]; e != nil {
			out = append(out, e) // shared: the resolver only reads it
		}
	}
	return out, nil
}

// Open implements resolver.Entries: an inline entry's material, from the snapshot.
func (snap *snapshot) Open(_ context.Context, e *resolver.Entry) (cert, key secret.PEM, err error) {
	se, ok := e.Handle.(*credfile.Entry)
	if !ok {
		return nil, nil, fmt.Errorf("entry %s: %w", e.ID, ErrEntryNotFound)
	}
	return secret.PEM(se.CertPEM), secret.PEM(se.KeyPEM), nil
}

func cutTLS(name string) (string, bool) { return strings.CutPrefix(name, "tls.") }
