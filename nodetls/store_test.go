package nodetls_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/nodetls"
)

var ctx = context.Background()

// TestHandshakes connects to a server that requires client certificates with every way a
// node's tls block can name its material: stored inline pair, stored file pair, direct
// file pair, inline PEM in the block, and the CA bundle by reference and by file.
func TestHandshakes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	addr := peerServer(t, ca)
	files := t.TempDir()
	caFile := materialtest.WriteFile(t, files, "ca.pem", ca.CertPEM())

	inlinePair := ca.Issue(t, materialtest.Options{CommonName: "inline-client"})
	storedFile := ca.Issue(t, materialtest.Options{CommonName: "stored-file-client", Key: materialtest.RSA2048})
	direct := ca.Issue(t, materialtest.Options{CommonName: "direct-client"})
	blockPEM := ca.Issue(t, materialtest.Options{CommonName: "block-pem-client"})
	opcua := ca.Issue(t, materialtest.Options{CommonName: "opcua-client"})

	f.inline("root-ca", material.CABundle, ca, false)
	f.inline("edge", material.ClientPair, inlinePair, true)
	f.inline("opcua-pair", material.ClientPair, opcua, true)
	f.fileEntry("edge-file", material.ClientPair,
		materialtest.WriteFile(t, files, "stored.crt", storedFile.CertPEM()), materialtest.WriteFile(t, files, "stored.key", storedFile.KeyPEM()))
	f.workspace(t,
		node("stored-inline", "mqtt-broker", map[string]any{"caBundleRef": "root-ca", "clientCertRef": "edge", "serverName": "localhost"}),
		node("stored-file", "mqtt-broker", map[string]any{"caBundleFile": caFile, "clientCertRef": "edge-file", "serverName": "localhost"}),
		node("direct", "tcp-out", map[string]any{"caBundleRef": "root-ca", "serverName": "localhost",
			"clientCertFile": materialtest.WriteFile(t, files, "direct.crt", direct.CertPEM()),
			"clientKeyFile":  materialtest.WriteFile(t, files, "direct.key", direct.KeyPEM())}),
		node("block-pem", "tcp-out", map[string]any{"caBundleRef": "root-ca", "serverName": "localhost", "clientCertPem": map[string]any{"set": true}, "clientKeyPem": map[string]any{"set": true}}),
		map[string]any{"id": "opcua-1", "type": "opcua-server", "certRef": "opcua-pair", "tls": map[string]any{"caBundleRef": "root-ca", "serverName": "localhost"}},
	)
	// Inline PEM of a tls block sits beside the workspace as node credentials.
	f.doc.NodeCredentials = append(f.doc.NodeCredentials,
		nodeCred("block-pem", "tls.clientCertPem", string(blockPEM.CertPEM())), nodeCred("block-pem", "tls.clientKeyPem", string(blockPEM.KeyPEM())))
	f.write(t)

	// Tenants other than the default read files only under roots, as on the server.
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), FileRoots: files})
	require.NoError(t, err)
	defer store.Close()
	for nodeID, want := range map[string]*materialtest.Cert{
		"stored-inline": inlinePair, "stored-file": storedFile, "direct": direct, "block-pem": blockPEM, "opcua-1": opcua,
	} {
		cfg, err := store.Config(ctx, "line-1", nodeID)
		require.NoError(t, err, nodeID)
		require.Equal(t, fp(want), dial(t, addr, cfg).presented(t), nodeID)
	}

	// The variant taking a block: inline PEM given directly, references from the file.
	block, _ := json.Marshal(map[string]any{"caBundleRef": "root-ca", "serverName": "localhost",
		"clientCertPem": string(blockPEM.CertPEM()), "clientKeyPem": string(blockPEM.KeyPEM())})
	cfg, err := store.ConfigFor(ctx, block)
	require.NoError(t, err)
	require.Equal(t, fp(blockPEM), dial(t, addr, cfg).presented(t))

	// A server the CA bundle does not vouch for fails verification.
	other := peerServer(t, materialtest.NewCA(t, materialtest.Options{}))
	cfg, err = store.Config(ctx, "line-1", "stored-inline")
	require.NoError(t, err)
	_, err = tlsDial(other, cfg)
	require.Error(t, err)
}

// TestRotationByRename: an mv of the files reaches the next connection and not one already
// open; so does a rotation whose second mv lands while a connection init runs: whether it
// comes before the first read or during the retry pause, the new pair is presented.
func TestRotationByRename(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	addr := peerServer(t, ca)
	files := t.TempDir()
	first := ca.Issue(t, materialtest.Options{CommonName: "first"})
	crt := materialtest.WriteFile(t, files, "client.crt", first.CertPEM())
	key := materialtest.WriteFile(t, files, "client.key", first.KeyPEM())
	f.inline("root-ca", material.CABundle, ca, false)
	f.fileEntry("edge-file", material.ClientPair, crt, key)
	f.workspace(t,
		node("direct", "tcp-out", map[string]any{"caBundleRef": "root-ca", "serverName": "localhost", "clientCertFile": crt, "clientKeyFile": key}),
		node("stored", "tcp-out", map[string]any{"caBundleRef": "root-ca", "serverName": "localhost", "clientCertRef": "edge-file"}))
	f.write(t)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), FileRoots: files, RetryPause: 20 * time.Millisecond})
	require.NoError(t, err)

	connect := func(nodeID string) *conn {
		cfg, err := store.Config(ctx, "line-1", nodeID)
		require.NoError(t, err)
		return dial(t, addr, cfg)
	}
	before := connect("direct")
	require.Equal(t, fp(first), before.presented(t))

	second := ca.Issue(t, materialtest.Options{CommonName: "second"})
	mv(t, crt, second.CertPEM())
	mv(t, key, second.KeyPEM())
	for _, n := range []string{"direct", "stored"} {
		require.Equal(t, fp(second), connect(n).presented(t), n)
	}
	require.Equal(t, fp(first), before.presented(t), "an open connection keeps its material")

	// The certificate is renamed, the key follows while the connection init runs.
	third := ca.Issue(t, materialtest.Options{CommonName: "third"})
	mv(t, crt, third.CertPEM())
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(5 * time.Millisecond) // the second mv of a rotation, during the retry pause
		mv(t, key, third.KeyPEM())
	})
	c := connect("direct")
	wg.Wait()
	require.Equal(t, fp(third), c.presented(t))
}

// TestLastKnownGood: a torn file, a flipped byte, another tenant's file and an older
// generation are each refused, the previous snapshot keeps answering, and the next good
// file is taken.
func TestLastKnownGood(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	addr := peerServer(t, ca)
	pair := ca.Issue(t, materialtest.Options{CommonName: "gen-5"})
	f.inline("root-ca", material.CABundle, ca, false)
	f.inline("edge", material.ClientPair, pair, true)
	f.workspace(t, node("n1", "tcp-out", map[string]any{"caBundleRef": "root-ca", "clientCertRef": "edge", "serverName": "localhost"}))
	f.doc.Generation = 5
	f.write(t)
	good, err := os.ReadFile(f.path())
	require.NoError(t, err)

	var (
		mu      sync.Mutex
		refused []error
	)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), OnRefused: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		refused = append(refused, err)
	}})
	require.NoError(t, err)
	require.EqualValues(t, 5, store.Generation())

	otherTenant := *f.doc
	otherTenant.Tenant, otherTenant.Generation = "globex", 9
	older := *f.doc
	older.Generation = 4
	flipped := append([]byte(nil), good...)
	i := strings.Index(string(flipped), `"ciphertext": "`) + len(`"ciphertext": "`) + 40
	flipped[i] = 'A' // still base64, so only the authentication can notice
	if good[i] == 'A' {
		flipped[i] = 'B'
	}
	for _, tc := range []struct {
		name string
		data func() []byte
		want error
	}{
		{"truncated", func() []byte { return good[:len(good)/2] }, nodetls.ErrNotCredentialsFile},
		{"flipped byte", func() []byte { return flipped }, nodetls.ErrTampered},
		{"another tenant", func() []byte { return seal(t, f, &otherTenant) }, nodetls.ErrWrongTenant},
		{"older generation", func() []byte { return seal(t, f, &older) }, nodetls.ErrStaleFile},
		{"under an unknown key", func() []byte { return sealUnder(t, f.doc, newKey(t)) }, nodetls.ErrUnknownKey},
	} {
		mv(t, f.path(), tc.data())
		err := store.Refresh()
		require.ErrorIs(t, err, tc.want, tc.name)
		require.ErrorIs(t, store.Err(), tc.want, tc.name)
		require.NotContains(t, err.Error(), "BEGIN", tc.name)
		cfg, err := store.Config(ctx, "line-1", "n1")
		require.NoError(t, err, tc.name)
		require.Equal(t, fp(pair), dial(t, addr, cfg).presented(t), tc.name)
		require.EqualValues(t, 5, store.Generation(), tc.name)
	}
	mu.Lock()
	require.Len(t, refused, 5, "each refused file is reported once")
	mu.Unlock()

	// A missing file is refused too; the snapshot keeps serving.
	require.NoError(t, os.Remove(f.path()))
	require.ErrorIs(t, store.Refresh(), nodetls.ErrFileMissing)
	_, err = store.Config(ctx, "line-1", "n1")
	require.NoError(t, err)

	next := ca.Issue(t, materialtest.Options{CommonName: "gen-6"})
	f.doc.Entries[1].CertPEM, f.doc.Entries[1].KeyPEM = string(next.ChainPEM()), string(next.KeyPEM())
	f.doc.Generation = 6
	f.write(t)
	cfg, err := store.Config(ctx, "line-1", "n1")
	require.NoError(t, err)
	require.Equal(t, fp(next), dial(t, addr, cfg).presented(t))
	require.NoError(t, store.Err())
	require.EqualValues(t, 6, store.Generation())
}

// TestKeyRingFollowsRotation: a file sealed under loopze.key.next (a rotation in progress)
// and then under the promoted key loads without a restart.
func TestKeyRingFollowsRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	f.inline("root-ca", material.CABundle, ca, false)
	f.workspace(t, node("n1", "tcp-out", map[string]any{"caBundleRef": "root-ca"}))
	f.write(t)
	store, err := nodetls.Open(f.path(), f.keyPath())
	require.NoError(t, err)

	next, err := envelope.GenerateKey()
	require.NoError(t, err)
	// The file arrives before the key: refused, then taken once the key is there.
	f.doc.Generation = 2
	mv(t, f.path(), sealUnder(t, f.doc, next))
	require.ErrorIs(t, store.Refresh(), nodetls.ErrUnknownKey)
	require.NoError(t, envelope.WriteKeyFile(filepath.Join(f.dir, envelope.NextKeyFile), next))
	require.NoError(t, store.Refresh())
	require.EqualValues(t, 2, store.Generation())

	// Promotion: loopze.key.next becomes loopze.key; the next file is still readable.
	require.NoError(t, os.Rename(filepath.Join(f.dir, envelope.NextKeyFile), f.keyPath()))
	f.doc.Generation = 3
	mv(t, f.path(), sealUnder(t, f.doc, next))
	require.NoError(t, store.Refresh())
	require.EqualValues(t, 3, store.Generation())
	_, err = store.Config(ctx, "line-1", "n1")
	require.NoError(t, err)
}

// TestBadInput: each mistake is an error naming what and where, testable with errors.Is,
// never quoting material.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	pair := ca.Issue(t, materialtest.Options{CommonName: "edge"})
	other := ca.Issue(t, materialtest.Options{CommonName: "other"})
	files := t.TempDir()
	f.inline("root-ca", material.CABundle, ca, false)
	f.inline("edge", material.ClientPair, pair, true)
	f.workspace(t,
		node("no-tls", "function", nil),
		node("wrong-type", "tcp-out", map[string]any{"caBundleRef": "edge"}),
		node("missing-ref", "tcp-out", map[string]any{"clientCertRef": "gone"}),
		node("missing-file", "tcp-out", map[string]any{"clientCertFile": filepath.Join(files, "none.crt"), "clientKeyFile": filepath.Join(files, "none.key")}),
		node("mismatch", "tcp-out", map[string]any{
			"clientCertFile": materialtest.WriteFile(t, files, "a.crt", pair.CertPEM()),
			"clientKeyFile":  materialtest.WriteFile(t, files, "b.key", other.KeyPEM())}),
		map[string]any{"id": "opcua-wrong", "type": "opcua-server", "certRef": "root-ca"},
	)
	f.write(t)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), FileRoots: files, RetryPause: time.Millisecond})
	require.NoError(t, err)

	for _, tc := range []struct {
		node     string
		want     error
		contains []string
	}{
		{"nope", nodetls.ErrNodeNotFound, []string{"flow line-1, node nope"}},
		{"no-tls", nodetls.ErrNoTLS, []string{"node no-tls"}},
		{"wrong-type", nodetls.ErrWrongType, []string{"flow line-1, node wrong-type", "tls.caBundleRef", `"edge", a client-pair`}},
		{"missing-ref", nodetls.ErrEntryNotFound, []string{"node missing-ref", "tls.clientCertRef", `"gone"`}},
		{"missing-file", nodetls.ErrUnresolved, []string{"node missing-file", "tls.clientCertFile", "none.crt"}},
		{"mismatch", nodetls.ErrUnresolved, []string{"node mismatch", "tls.clientKeyFile"}},
		{"opcua-wrong", nodetls.ErrWrongType, []string{"node opcua-wrong", "certRef names \"root-ca\", a ca-bundle"}},
	} {
		_, err := store.Config(ctx, "line-1", tc.node)
		require.ErrorIs(t, err, tc.want, tc.node)
		for _, c := range tc.contains {
			require.Contains(t, err.Error(), c, tc.node)
		}
		require.NotContains(t, err.Error(), "BEGIN", tc.node)
	}
	parts, err := store.Describe(ctx, "line-1", "wrong-type")
	require.NoError(t, err)
	require.Len(t, parts, 1)
	require.Contains(t, parts[0].Error, "must name a ca-bundle")

	_, err = store.ConfigFor(ctx, json.RawMessage(`{"caBundleRef": 3}`))
	require.ErrorContains(t, err, "tls.caBundleRef")

	// Opening: missing file, missing key, wrong key, a file that is not one.
	_, err = nodetls.Open(filepath.Join(files, "none.json"), f.keyPath())
	require.ErrorIs(t, err, nodetls.ErrFileMissing)
	_, err = nodetls.Open(f.path(), filepath.Join(t.TempDir(), "loopze.key"))
	require.ErrorContains(t, err, "loopze.key")
	_, err = nodetls.Open(f.path(), filepath.Join(files, "a.crt"))
	require.ErrorContains(t, err, "neither a runtime key file nor named loopze.key")
	wrongDir := t.TempDir()
	_, err = envelope.Load(wrongDir, nil)
	require.NoError(t, err)
	_, err = nodetls.Open(f.path(), filepath.Join(wrongDir, envelope.KeyFile))
	require.ErrorIs(t, err, nodetls.ErrUnknownKey)
	junk := materialtest.WriteFile(t, files, "junk.json", pair.KeyPEM())
	_, err = nodetls.Open(junk, f.keyPath())
	require.ErrorIs(t, err, nodetls.ErrNotCredentialsFile)
	require.NotContains(t, err.Error(), "BEGIN")
	_, err = nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), Tenant: "globex"})
	require.ErrorIs(t, err, nodetls.ErrWrongTenant)

	require.NoError(t, store.Close())
	_, err = store.Config(ctx, "line-1", "edge")
	require.True(t, errors.Is(err, nodetls.ErrClosed))
}

// TestPKCS12FileEntry: a file-sourced entry whose certPath is a PKCS#12 bundle opened with
// its passphrase file, as the export job records it, is read at connection init.
func TestPKCS12FileEntry(t *testing.T) {
	t.Parallel()
	opensslBin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl on PATH")
	}
	f := newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	addr := peerServer(t, ca)
	pair := ca.Issue(t, materialtest.Options{CommonName: "p12-client"})
	files := t.TempDir()
	crt := materialtest.WriteFile(t, files, "c.crt", pair.CertPEM())
	key := materialtest.WriteFile(t, files, "c.key", pair.KeyPEM())
	p12 := filepath.Join(files, "edge.p12")
	out, err := exec.Command(opensslBin, "pkcs12", "-export", "-inkey", key, "-in", crt, "-passout", "pass:s3cret-pass", "-out", p12).CombinedOutput()
	require.NoError(t, err, "%s", out)
	pass := materialtest.WriteFile(t, files, "edge.pass", []byte("s3cret-pass\n"))
	f.inline("root-ca", material.CABundle, ca, false)
	f.doc.Entries = append(f.doc.Entries, credfile.Entry{ID: "edge-p12", Type: "client-pair", Source: "file", CertPath: p12, PassphraseFile: pass})
	f.workspace(t, node("n1", "tcp-out", map[string]any{"caBundleRef": "root-ca", "clientCertRef": "edge-p12", "serverName": "localhost"}))
	f.write(t)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), FileRoots: files})
	require.NoError(t, err)
	cfg, err := store.Config(ctx, "line-1", "n1")
	require.NoError(t, err)
	require.Equal(t, fp(pair), dial(t, addr, cfg).presented(t))
}
