package nodetls_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/credfile/credfiletest"
	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// fixture is a data directory with a master key, and a tenant document to seal into
// its credentials.json.
type fixture struct {
	dir string
	key []byte // the master key in dir/loopze.key
	doc *credfile.Document
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	_, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	key, err := envelope.ReadKeyFile(filepath.Join(dir, envelope.KeyFile))
	require.NoError(t, err)
	return &fixture{dir: dir, key: key, doc: &credfile.Document{Tenant: "acme", Generation: 1, ExportedAt: time.Now().UTC()}}
}

func (f *fixture) path() string    { return filepath.Join(f.dir, credfile.FileName) }
func (f *fixture) keyPath() string { return filepath.Join(f.dir, envelope.KeyFile) }

// inline adds a stored inline entry.
func (f *fixture) inline(id string, typ material.Kind, c *materialtest.Cert, withKey bool) {
	e := credfile.Entry{ID: id, Name: id, Type: string(typ), Source: "inline", CertPEM: string(c.ChainPEM())}
	if withKey {
		e.KeyPEM = string(c.KeyPEM())
	}
	f.doc.Entries = append(f.doc.Entries, e)
}

// fileEntry adds a stored file-sourced entry.
func (f *fixture) fileEntry(id string, typ material.Kind, certPath, keyPath string) {
	f.doc.Entries = append(f.doc.Entries, credfile.Entry{ID: id, Name: id, Type: string(typ), Source: "file", CertPath: certPath, KeyPath: keyPath})
}

// workspace sets the deployed workspace: one flow "line-1" holding nodes.
func (f *fixture) workspace(t testing.TB, nodes ...map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"flows": []any{map[string]any{"id": "line-1", "nodes": nodes}}})
	require.NoError(t, err)
	f.doc.Workspace = b
}

// write seals the document into credentials.json by rename, as the export job does.
func (f *fixture) write(t testing.TB) {
	t.Helper()
	require.NoError(t, durable.Replace(f.path(), credfiletest.Seal(t, f.key, f.doc)))
}

func node(id, typ string, tls map[string]any) map[string]any {
	n := map[string]any{"id": id, "type": typ}
	if tls != nil {
		n["tls"] = tls
	}
	return n
}

// peerServer is a TLS server that requires a client certificate signed by ca and answers
// every byte with the fingerprint of the certificate the connection presented.
func peerServer(t *testing.T, ca *materialtest.Cert) string {
	t.Helper()
	srv := ca.Issue(t, materialtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Cert.Raw}, PrivateKey: srv.Key, Leaf: srv.Cert}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})
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

// mv replaces path the way the operator documentation shows: write path.new, then mv.
func mv(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".new", data, 0o600))
	require.NoError(t, os.Rename(path+".new", path))
}

func fp(c *materialtest.Cert) string { return material.Fingerprint(c.Cert) }

func nodeCred(nodeID, name, value string) credfile.NodeCredential {
	return credfile.NodeCredential{NodeID: nodeID, Name: name, Value: value}
}

func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		// TLS 1.3 reports a refused client certificate at the first read.
		_, err = c.Write([]byte("?"))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		_ = c.Close()
	}
	return c, err
}

func seal(t testing.TB, f *fixture, doc *credfile.Document) []byte {
	return sealUnder(t, doc, f.key)
}

// sealUnder seals doc under a tenant key wrapped under the master key key.
func sealUnder(t testing.TB, doc *credfile.Document, key []byte) []byte {
	t.Helper()
	return credfiletest.Seal(t, key, doc)
}

func newKey(t testing.TB) []byte {
	t.Helper()
	k, err := envelope.GenerateKey()
	require.NoError(t, err)
	return k
}
