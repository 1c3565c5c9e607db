package api_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/resolver"
)

// peerServer is a TLS server that requires a client certificate signed by its CA and,
// for every byte a client sends, answers with the fingerprint of the certificate that
// client presented at its handshake.
func peerServer(t *testing.T, ca *materialtest.Cert, moreClientCAs ...*x509.Certificate) string {
	t.Helper()
	srv := ca.Issue(t, materialtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, c := range moreClientCAs {
		pool.AddCert(c)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Cert.Raw}, PrivateKey: srv.Key, Leaf: srv.Cert}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.HandshakeContext(context.Background()) != nil {
					return
				}
				fp := material.Fingerprint(tc.ConnectionState().PeerCertificates[0])
				buf := make([]byte, 1)
				for {
					if _, err := tc.Read(buf); err != nil {
						return
					}
					if _, err := tc.Write([]byte(fp + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// conn is one client connection to a peerServer.
type conn struct {
	c *tls.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string, cfg *tls.Config) *conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &conn{c: c, r: bufio.NewReader(c)}
}

// presented asks the server which certificate this connection presented.
func (c *conn) presented(t *testing.T) string {
	t.Helper()
	_, err := c.c.Write([]byte("?"))
	require.NoError(t, err)
	line, err := c.r.ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(line)
}

// rotate replaces path the way the operator documentation shows: write path.new, then mv.
func rotate(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".new", data, 0o600))
	require.NoError(t, os.Rename(path+".new", path))
}

// tlsEnv is a tenant with a CA entry and a server that trusts it.
type tlsEnv struct {
	env  *apitest.Env
	tok  string
	ca   *materialtest.Cert
	addr string
}

func newTLSEnv(t *testing.T) *tlsEnv {
	t.Helper()
	env := apitest.New(t, tempRoots())
	te := &tlsEnv{env: env, tok: env.Token(t, "acme", "editor"), ca: materialtest.NewCA(t, materialtest.Options{})}
	post(t, env, te.tok, inlineCA("root-ca", te.ca))
	te.addr = peerServer(t, te.ca)
	return te
}

// deployClient deploys one tcp-out node with the given client part and the CA by reference.
func (te *tlsEnv) deployClient(t *testing.T, client obj) {
	t.Helper()
	block := obj{"caBundleRef": "root-ca", "serverName": "localhost"}
	for k, v := range client {
		block[k] = v
	}
	res := deploy(t, te.env, te.tok, workspaceOf(flow("line-1", node("tcp-out-1", "tcp-out", obj{"tls": block}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
}

// connect is a connection init of the deployed node.
func (te *tlsEnv) connect(t *testing.T) *conn {
	t.Helper()
	cfg, err := te.env.Workspace.NodeTLSConfig(context.Background(), "acme", "line-1", "tcp-out-1")
	require.NoError(t, err)
	return dial(t, te.addr, cfg)
}

// reported is the clientCert fingerprint GET .../tls shows now.
func (te *tlsEnv) reported(t *testing.T) string {
	t.Helper()
	res := te.env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows/line-1/nodes/tcp-out-1/tls", Token: te.tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.NotContains(t, string(res.Body), "BEGIN")
	var rep struct {
		Parts []struct{ Part, FingerprintSha256, Error string } `json:"parts"`
	}
	res.Decode(t, &rep)
	for _, p := range rep.Parts {
		if p.Part == "clientCert" {
			require.Empty(t, p.Error)
			return p.FingerprintSha256
		}
	}
	t.Fatalf("no clientCert part in %s", res.Body)
	return ""
}

// requireRotation checks the next connection presents next while one opened before keeps
// presenting prev.
func requireRotation(t *testing.T, te *tlsEnv, before *conn, prev, next *materialtest.Cert) {
	t.Helper()
	after := te.connect(t)
	require.Equal(t, fingerprint(next), after.presented(t))
	require.Equal(t, fingerprint(prev), before.presented(t))
	require.Equal(t, fingerprint(next), te.reported(t))
}

func TestRotationThroughFileEntry(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	dir := t.TempDir()
	v1, v2 := te.ca.Issue(t, materialtest.Options{CommonName: "edge-v1"}), te.ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	certPath := apitest.WriteFile(t, dir, "edge.crt", v1.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "edge.key", v1.KeyPEM())
	post(t, te.env, te.tok, obj{"id": "edge-client", "name": "Edge", "type": "client-pair", "source": "file", "certPath": certPath, "keyPath": keyPath})
	te.deployClient(t, obj{"clientCertRef": "edge-client"})

	before := te.connect(t)
	require.Equal(t, fingerprint(v1), before.presented(t))
	require.Equal(t, fingerprint(v1), te.reported(t))
	rotate(t, certPath, v2.ChainPEM())
	rotate(t, keyPath, v2.KeyPEM())
	requireRotation(t, te, before, v1, v2)
}

func TestRotationThroughInlineEntryPut(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	v1, v2 := te.ca.Issue(t, materialtest.Options{CommonName: "edge-v1"}), te.ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	post(t, te.env, te.tok, inlinePair("edge-client", v1))
	te.deployClient(t, obj{"clientCertRef": "edge-client"})

	before := te.connect(t)
	require.Equal(t, fingerprint(v1), before.presented(t))
	res := te.env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/edge-client", Token: te.tok,
		Body: obj{"certPem": string(v2.ChainPEM()), "keyPem": string(v2.KeyPEM())}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	requireRotation(t, te, before, v1, v2)
	requireNoSecrets(t, te.env, res.Body, v1, v2)
}

func TestRotationThroughDirectFiles(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	dir := t.TempDir()
	v1, v2 := te.ca.Issue(t, materialtest.Options{CommonName: "edge-v1"}), te.ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	certPath := apitest.WriteFile(t, dir, "edge.crt", v1.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "edge.key", v1.KeyPEM())
	te.deployClient(t, obj{"clientCertFile": certPath, "clientKeyFile": keyPath})

	before := te.connect(t)
	require.Equal(t, fingerprint(v1), before.presented(t))
	rotate(t, certPath, v2.ChainPEM())
	rotate(t, keyPath, v2.KeyPEM())
	requireRotation(t, te, before, v1, v2)
}

func TestRotationThroughCertbotLiveLinks(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	root := t.TempDir()
	v1, v2 := te.ca.Issue(t, materialtest.Options{CommonName: "edge-v1"}), te.ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	archive := filepath.Join(root, "archive", "example.com")
	live := filepath.Join(root, "live", "example.com")
	require.NoError(t, os.MkdirAll(live, 0o700))
	apitest.WriteFile(t, archive, "fullchain1.pem", v1.ChainPEM())
	apitest.WriteFile(t, archive, "privkey1.pem", v1.KeyPEM())
	// certbot switches a live/ link by making the new link beside it and renaming it over.
	link := func(name, target string) {
		tmp := filepath.Join(live, name+".tmp")
		require.NoError(t, os.Symlink(filepath.Join("..", "..", "archive", "example.com", target), tmp))
		require.NoError(t, os.Rename(tmp, filepath.Join(live, name)))
	}
	link("fullchain.pem", "fullchain1.pem")
	link("privkey.pem", "privkey1.pem")
	post(t, te.env, te.tok, obj{"id": "example-com", "name": "certbot", "type": "client-pair", "source": "file",
		"certPath": filepath.Join(live, "fullchain.pem"), "keyPath": filepath.Join(live, "privkey.pem")})
	te.deployClient(t, obj{"clientCertRef": "example-com"})

	before := te.connect(t)
	require.Equal(t, fingerprint(v1), before.presented(t))
	apitest.WriteFile(t, archive, "fullchain2.pem", v2.ChainPEM())
	apitest.WriteFile(t, archive, "privkey2.pem", v2.KeyPEM())
	link("fullchain.pem", "fullchain2.pem")
	link("privkey.pem", "privkey2.pem")
	requireRotation(t, te, before, v1, v2)
}

// TestPairMismatchIsRetriedOnce catches a rotation between its two renames: the
// certificate is new, the key still old. The first read fails, the resolver pauses once
// (the second rename lands during the pause here) and the second read succeeds. When the
// key never follows, the second failure is the error.
func TestPairMismatchIsRetriedOnce(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	dir := t.TempDir()
	v1, v2 := te.ca.Issue(t, materialtest.Options{CommonName: "edge-v1"}), te.ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	certPath := apitest.WriteFile(t, dir, "edge.crt", v1.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "edge.key", v1.KeyPEM())
	te.deployClient(t, obj{"clientCertFile": certPath, "clientKeyFile": keyPath})
	n, err := te.env.Workspace.Node(context.Background(), "acme", "line-1", "tcp-out-1")
	require.NoError(t, err)

	var waits atomic.Int32
	finishRotation := func(context.Context, time.Duration) error {
		waits.Add(1)
		rotate(t, keyPath, v2.KeyPEM())
		return nil
	}
	r := &resolver.Resolver{Entries: te.env.Catalog.Entries(), Roots: te.env.Catalog.Roots, Logger: te.env.Logger, Wait: finishRotation}

	cfg, err := r.BuildTLSConfig(context.Background(), "acme", n.TLS)
	require.NoError(t, err)
	require.Zero(t, waits.Load(), "a matching pair reads once")
	require.Equal(t, fingerprint(v1), dial(t, te.addr, cfg).presented(t))

	rotate(t, certPath, v2.ChainPEM()) // the first rename only
	cfg, err = r.BuildTLSConfig(context.Background(), "acme", n.TLS)
	require.NoError(t, err)
	require.EqualValues(t, 1, waits.Load())
	require.Equal(t, fingerprint(v2), dial(t, te.addr, cfg).presented(t))

	// The key never follows: one pause, then the error, naming the field, not the material.
	v3 := te.ca.Issue(t, materialtest.Options{CommonName: "edge-v3"})
	rotate(t, certPath, v3.ChainPEM())
	waits.Store(0)
	r.Wait = func(context.Context, time.Duration) error { waits.Add(1); return nil }
	_, err = r.BuildTLSConfig(context.Background(), "acme", n.TLS)
	require.ErrorIs(t, err, resolver.ErrUnresolved)
	require.Contains(t, err.Error(), "tls.clientKeyFile")
	require.Contains(t, err.Error(), "does not match")
	require.NotContains(t, err.Error(), "BEGIN")
	require.EqualValues(t, 1, waits.Load())

	// A cancelled connection init does not wait out the pause.
	r.Wait = nil
	r.RetryPause = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = r.BuildTLSConfig(ctx, "acme", n.TLS)
	require.ErrorIs(t, err, context.Canceled)
}

func TestBuildTLSConfigRules(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	dir := t.TempDir()
	expired := te.ca.Issue(t, materialtest.Options{CommonName: "old", NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	server := te.ca.Issue(t, materialtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})
	client := te.ca.Issue(t, materialtest.Options{CommonName: "client"})
	post(t, te.env, te.tok, inlinePair("client", client))
	post(t, te.env, te.tok, obj{"id": "server", "name": "server", "type": "server-pair", "source": "inline",
		"certPem": string(server.ChainPEM()), "keyPem": string(server.KeyPEM())})
	r := te.env.Workspace.Resolver
	ctx := context.Background()

	// Expired material is a warning, not a failure.
	cfg, err := r.BuildTLSConfig(ctx, "acme", &refs.TLS{ClientCert: refs.PartSpec{
		CertFile: apitest.WriteFile(t, dir, "old.crt", expired.ChainPEM()), KeyFile: apitest.WriteFile(t, dir, "old.key", expired.KeyPEM())}})
	require.NoError(t, err)
	require.NotNil(t, cfg.GetClientCertificate)
	require.Contains(t, te.env.Logs.String(), "tls material warning")
	require.Contains(t, te.env.Logs.String(), "expired")

	// References are type-checked again at resolution, in the caller's tenant only.
	for _, c := range []struct {
		tenant string
		block  *refs.TLS
		msg    string
	}{
		{"acme", &refs.TLS{CABundle: refs.PartSpec{Ref: "client"}}, "a client-pair; it must name a ca-bundle"},
		{"acme", &refs.TLS{ClientCert: refs.PartSpec{Ref: "gone"}}, "no entry"},
		{"other", &refs.TLS{ClientCert: refs.PartSpec{Ref: "client"}}, "no entry"},
		{"acme", &refs.TLS{CABundle: refs.PartSpec{CertFile: "relative.pem"}}, "not absolute"},
		{"acme", &refs.TLS{CABundle: refs.PartSpec{CertPEM: &refs.Value{Keep: true}}}, "not loaded"},
	} {
		_, err := r.BuildTLSConfig(ctx, c.tenant, c.block)
		require.ErrorIs(t, err, resolver.ErrUnresolved)
		require.Contains(t, err.Error(), c.msg)
	}

	// A server-side block: its server pair, and the CA to verify the clients it requires.
	serverCfg, err := r.BuildTLSConfig(ctx, "acme", &refs.TLS{CABundle: refs.PartSpec{Ref: "root-ca"}, ServerCert: refs.PartSpec{Ref: "server"}})
	require.NoError(t, err)
	require.Equal(t, tls.RequireAndVerifyClientCert, serverCfg.ClientAuth)
	clientCfg, err := r.BuildTLSConfig(ctx, "acme", &refs.TLS{CABundle: refs.PartSpec{Ref: "root-ca"}, ClientCert: refs.PartSpec{Ref: "client"}, ServerName: "localhost"})
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			accepted <- err.Error()
			return
		}
		accepted <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), clientCfg)
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, "client", <-accepted)

	// Without the client part the server refuses the handshake.
	noClient, err := r.BuildTLSConfig(ctx, "acme", &refs.TLS{CABundle: refs.PartSpec{Ref: "root-ca"}, ServerName: "localhost"})
	require.NoError(t, err)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	c2, err := tls.Dial("tcp", ln.Addr().String(), noClient)
	if err == nil {
		_, err = c2.Read(make([]byte, 1))
		_ = c2.Close()
	}
	require.Error(t, err)
	require.False(t, errors.Is(err, resolver.ErrUnresolved))
	requireNoSecrets(t, te.env, nil, client, server, expired)
}

// TestInlineEntryExpiresWhileCached: a stored inline entry is parsed once per version, yet
// it still warns once its certificate expires.
func TestInlineEntryExpiresWhileCached(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	soon := te.ca.Issue(t, materialtest.Options{CommonName: "short-lived", NotAfter: time.Now().Add(time.Hour)})
	post(t, te.env, te.tok, inlinePair("short", soon))
	var now atomic.Pointer[time.Time]
	t0 := time.Now()
	now.Store(&t0)
	r := &resolver.Resolver{Entries: te.env.Catalog.Entries(), Roots: te.env.Catalog.Roots, Logger: te.env.Logger, Now: func() time.Time { return *now.Load() }}
	block := &refs.TLS{ClientCert: refs.PartSpec{Ref: "short"}}
	for range 2 {
		_, err := r.BuildTLSConfig(context.Background(), "acme", block)
		require.NoError(t, err)
	}
	require.NotContains(t, te.env.Logs.String(), "expired")
	later := t0.Add(2 * time.Hour)
	now.Store(&later)
	_, err := r.BuildTLSConfig(context.Background(), "acme", block)
	require.NoError(t, err)
	require.Contains(t, te.env.Logs.String(), "expired")
}
