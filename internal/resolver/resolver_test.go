package resolver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/secret"
)

// memEntries is an Entries source held in memory, as a runtime holding a snapshot has one.
type memEntries struct {
	entries map[string]*resolver.Entry
	pem     map[string][2]secret.PEM
	opened  int
}

func (m *memEntries) Lookup(_ context.Context, tenant string, ids []string) ([]*resolver.Entry, error) {
	var out []*resolver.Entry
	for _, id := range ids {
		if e, ok := m.entries[tenant+"/"+id]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memEntries) Open(_ context.Context, e *resolver.Entry) (secret.PEM, secret.PEM, error) {
	m.opened++
	p, ok := m.pem[e.Handle.(string)]
	if !ok {
		return nil, nil, errors.New("no material")
	}
	return p[0], p[1], nil
}

// leafCN is the common name of the certificate a config presents.
func leafCN(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	cert, err := cfg.GetClientCertificate(nil)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	return c.Subject.CommonName
}

func TestResolverFromAnEntriesSource(t *testing.T) {
	t.Parallel()
	ca := materialtest.NewCA(t, materialtest.Options{})
	a, b := ca.Issue(t, materialtest.Options{CommonName: "a"}), ca.Issue(t, materialtest.Options{CommonName: "b"})
	src := &memEntries{
		entries: map[string]*resolver.Entry{
			"acme/pair": {ID: "pair", Type: material.ClientPair, Source: "inline", Handle: "acme/pair"},
			"acme/root": {ID: "root", Type: material.CABundle, Source: "inline", Handle: "acme/root"},
		},
		pem: map[string][2]secret.PEM{
			"acme/pair": {secret.PEM(a.ChainPEM()), secret.PEM(a.KeyPEM())},
			"acme/root": {secret.PEM(ca.CertPEM()), nil},
		},
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	require.NoError(t, os.WriteFile(certPath, b.ChainPEM(), 0o600))
	require.NoError(t, os.WriteFile(keyPath, b.KeyPEM(), 0o600))

	// Tenants other than the default read files only inside LOOPZE_FILE_ROOTS.
	r := &resolver.Resolver{Entries: src, Roots: material.Roots{os.TempDir()}, Logger: logging.Discard()}
	ctx := context.Background()
	cfg, err := r.BuildTLSConfig(ctx, "acme", &refs.TLS{CABundle: refs.PartSpec{Ref: "root"}, ClientCert: refs.PartSpec{Ref: "pair"}})
	require.NoError(t, err)
	require.NotNil(t, cfg.RootCAs)
	require.Equal(t, "a", leafCN(t, cfg))

	// Inline material is opened once per version, not once per connection.
	_, err = r.BuildTLSConfig(ctx, "acme", &refs.TLS{ClientCert: refs.PartSpec{Ref: "pair"}})
	require.NoError(t, err)
	require.Equal(t, 2, src.opened, "pair and root once each")

	// Wrong type, missing entry, another tenant: refused, naming the field.
	for _, block := range []*refs.TLS{
		{CABundle: refs.PartSpec{Ref: "pair"}},
		{ClientCert: refs.PartSpec{Ref: "missing"}},
	} {
		_, err := r.BuildTLSConfig(ctx, "acme", block)
		require.ErrorIs(t, err, resolver.ErrUnresolved)
	}
	_, err = r.BuildTLSConfig(ctx, "globex", &refs.TLS{ClientCert: refs.PartSpec{Ref: "pair"}})
	require.ErrorIs(t, err, resolver.ErrUnresolved)

	// Direct files are read at every call: a rename is seen by the next one.
	block := &refs.TLS{ClientCert: refs.PartSpec{CertFile: certPath, KeyFile: keyPath}}
	cfg, err = r.BuildTLSConfig(ctx, "acme", block)
	require.NoError(t, err)
	require.Equal(t, "b", leafCN(t, cfg))
	c := ca.Issue(t, materialtest.Options{CommonName: "c"})
	require.NoError(t, os.WriteFile(certPath+".new", c.ChainPEM(), 0o600))
	require.NoError(t, os.WriteFile(keyPath+".new", c.KeyPEM(), 0o600))
	require.NoError(t, os.Rename(certPath+".new", certPath))
	// Caught between the two renames: the retry after the pause sees the pair whole.
	r.Wait = func(context.Context, time.Duration) error { return os.Rename(keyPath+".new", keyPath) }
	cfg, err = r.BuildTLSConfig(ctx, "acme", block)
	require.NoError(t, err)
	require.Equal(t, "c", leafCN(t, cfg))
}

// A restore brings an entry back with other material under a stamp not seen before: it is
// parsed again, whatever else it shares with the cached one.
func TestResolverParsesARestoredEntryAgain(t *testing.T) {
	t.Parallel()
	ca := materialtest.NewCA(t, materialtest.Options{})
	a, b := ca.Issue(t, materialtest.Options{CommonName: "before"}), ca.Issue(t, materialtest.Options{CommonName: "restored"})
	src := &memEntries{
		entries: map[string]*resolver.Entry{"acme/pair": {ID: "pair", Type: material.ClientPair, Source: "inline",
			Stamp: resolver.Stamp{1}, Handle: "acme/pair"}},
		pem: map[string][2]secret.PEM{"acme/pair": {secret.PEM(a.ChainPEM()), secret.PEM(a.KeyPEM())}},
	}
	r := &resolver.Resolver{Entries: src, Logger: logging.Discard()}
	ctx := context.Background()
	block := &refs.TLS{ClientCert: refs.PartSpec{Ref: "pair"}}
	cfg, err := r.BuildTLSConfig(ctx, "acme", block)
	require.NoError(t, err)
	require.Equal(t, "before", leafCN(t, cfg))

	src.entries["acme/pair"] = &resolver.Entry{ID: "pair", Type: material.ClientPair, Source: "inline",
		Stamp: resolver.Stamp{2}, Handle: "acme/pair"}
	src.pem["acme/pair"] = [2]secret.PEM{secret.PEM(b.ChainPEM()), secret.PEM(b.KeyPEM())}
	cfg, err = r.BuildTLSConfig(ctx, "acme", block)
	require.NoError(t, err)
	require.Equal(t, "restored", leafCN(t, cfg))
	require.Equal(t, 2, src.opened)
}

// File material is read at every call and decoded again whenever the bytes differ from the
// last decode, however the file changed: here in place, with the old modification time
// put back, so only the contents tell. Unchanged bytes reuse the decode, until a validity
// boundary passes and the warnings must be computed again.
func TestResolverDecodesFileBytesNotTimes(t *testing.T) {
	t.Parallel()
	ca := materialtest.NewCA(t, materialtest.Options{})
	notAfter := time.Now().Add(time.Hour).Truncate(time.Second)
	a := ca.Issue(t, materialtest.Options{CommonName: "aaaa", NotAfter: notAfter})
	b := ca.Issue(t, materialtest.Options{CommonName: "bbbb", NotAfter: notAfter})
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	require.NoError(t, os.WriteFile(certPath, a.ChainPEM(), 0o600))
	require.NoError(t, os.WriteFile(keyPath, a.KeyPEM(), 0o600))
	fi, err := os.Stat(certPath)
	require.NoError(t, err)

	now := time.Now()
	r := &resolver.Resolver{Entries: &memEntries{}, Logger: logging.Discard(), Now: func() time.Time { return now }}
	ctx := context.Background()
	block := &refs.TLS{ClientCert: refs.PartSpec{CertFile: certPath, KeyFile: keyPath}}
	leaf := func() *x509.Certificate {
		t.Helper()
		cfg, err := r.BuildTLSConfig(ctx, material.DefaultTenant, block)
		require.NoError(t, err)
		cert, err := cfg.GetClientCertificate(nil)
		require.NoError(t, err)
		return cert.Leaf
	}
	first := leaf()
	require.Equal(t, "aaaa", first.Subject.CommonName)
	require.Same(t, first, leaf(), "the same bytes are not decoded again")

	for _, w := range []struct {
		path string
		data []byte
	}{{certPath, b.ChainPEM()}, {keyPath, b.KeyPEM()}} {
		f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_TRUNC, 0)
		require.NoError(t, err)
		_, err = f.Write(w.data)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.NoError(t, os.Chtimes(w.path, fi.ModTime(), fi.ModTime()))
	}
	require.Equal(t, "bbbb", leaf().Subject.CommonName)

	// Unchanged bytes, but the certificate has expired since: decoded again, with the
	// expiry warning.
	now = notAfter.Add(time.Minute)
	reports, err := r.Report(ctx, material.DefaultTenant, block)
	require.NoError(t, err)
	require.Len(t, reports, 1)
	require.Empty(t, reports[0].Error)
	require.NotEmpty(t, reports[0].Warnings)
	require.Contains(t, reports[0].Warnings[0], "expired")

	// A pair that no longer loads is reported every time, never served from before.
	require.NoError(t, os.WriteFile(keyPath, a.KeyPEM(), 0o600))
	r.Wait = func(context.Context, time.Duration) error { return nil }
	_, err = r.BuildTLSConfig(ctx, material.DefaultTenant, block)
	require.ErrorIs(t, err, resolver.ErrUnresolved)
}
