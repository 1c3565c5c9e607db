package sealing_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// golden reads testdata/golden.txt: ciphertexts sealed once, under a fixed test key, by the
// code that wrote the rows of existing databases.
func golden(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("testdata/golden.txt")
	require.NoError(t, err)
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		out[fields[0]] = fields[1:]
	}
	require.NoError(t, sc.Err())
	return out
}

func testRing(t *testing.T) *envelope.Ring {
	t.Helper()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	ring, err := envelope.NewRing(key)
	require.NoError(t, err)
	return ring
}

// TestLayoutsOpenGoldenCiphertexts pins every AAD layout byte for byte: each golden
// ciphertext opens under its layout and under no other.
func TestLayoutsOpenGoldenCiphertexts(t *testing.T) {
	t.Parallel()
	ring := testRing(t)
	g := golden(t)
	layouts := []struct {
		name string
		aad  envelope.AAD
		want envelope.AAD
	}{
		{"entry-cert", sealing.Entry("acme", "edge-client", sealing.FieldCert), envelope.AAD{Tenant: "acme", Owner: "entry:edge-client", Field: "certPem"}},
		{"entry-key", sealing.Entry("acme", "edge-client", sealing.FieldKey), envelope.AAD{Tenant: "acme", Owner: "entry:edge-client", Field: "keyPem"}},
		{"entry-version-cert", sealing.EntryVersion("acme", "edge-client", 7, sealing.FieldCert), envelope.AAD{Tenant: "acme", Owner: "entry-version:edge-client:7", Field: "certPem"}},
		{"entry-version-key", sealing.EntryVersion("acme", "edge-client", 7, sealing.FieldKey), envelope.AAD{Tenant: "acme", Owner: "entry-version:edge-client:7", Field: "keyPem"}},
		{"node-credential", sealing.NodeSecret("acme", "tcp-out-3", "credentials.password"), envelope.AAD{Tenant: "acme", Owner: "node:tcp-out-3", Field: "credentials.password"}},
		{"node-tls", sealing.NodeSecret("acme", "tcp-out-3", "tls.clientKeyPem"), envelope.AAD{Tenant: "acme", Owner: "node:tcp-out-3", Field: "tls.clientKeyPem"}},
	}
	for _, l := range layouts {
		require.Equal(t, l.want, l.aad, l.name)
		blob, err := hex.DecodeString(g[l.name][0])
		require.NoError(t, err)
		pt, err := sealing.Open(ring, blob, l.aad)
		require.NoError(t, err, l.name)
		require.Equal(t, "plaintext of "+l.name, string(pt))
		for _, other := range layouts {
			if other.name != l.name {
				_, err := ring.Open(blob, other.aad)
				require.ErrorIs(t, err, envelope.ErrDecrypt, "%s under %s", l.name, other.name)
			}
		}
	}

	file := g["file"]
	require.Equal(t, file[1], hex.EncodeToString(sealing.File(1, "acme", 42)))
	require.Equal(t, "loopze-credentials/v1\x00acme\x0042", string(sealing.File(1, "acme", 42)))
	ct, err := hex.DecodeString(file[2])
	require.NoError(t, err)
	pt, err := ring.OpenWith(file[0], ct, sealing.File(1, "acme", 42))
	require.NoError(t, err)
	require.Equal(t, "plaintext of file", string(pt))
	_, err = ring.OpenWith(file[0], ct, sealing.File(1, "acme", 43))
	require.Error(t, err, "another generation's AAD")
}

// TestOpenReloadsForAKeyWrittenElsewhere: a value sealed under a master key that another
// process added to the data directory opens after one reload.
func TestOpenReloadsForAKeyWrittenElsewhere(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ours, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	next, err := envelope.GenerateKey()
	require.NoError(t, err)
	other, err := envelope.NewRing([]byte(next))
	require.NoError(t, err)
	aad := sealing.Entry("acme", "e", sealing.FieldKey)
	blob, err := other.Seal([]byte("secret"), aad)
	require.NoError(t, err)

	_, err = sealing.Open(ours, blob, aad)
	require.ErrorIs(t, err, envelope.ErrUnknownKey, "the key is not on disk yet")
	require.NoError(t, envelope.WriteKeyFile(filepath.Join(dir, envelope.NextKeyFile), []byte(next)))
	pt, err := sealing.Open(ours, blob, aad)
	require.NoError(t, err)
	require.Equal(t, "secret", string(pt))
}

// TestPairs: a pair opens only where it was sealed for (its entry's row or one version of
// its history), its stamp changes when the material is sealed again and stays through a
// rewrap under another master key.
func TestPairs(t *testing.T) {
	t.Parallel()
	ring := testRing(t)
	row := sealing.Place{Tenant: "acme", EntryID: "edge"}
	v2 := sealing.Place{Tenant: "acme", EntryID: "edge", Version: 2}
	p, err := sealing.SealPair(ring, row, secret.PEM("cert"), secret.PEM("key"))
	require.NoError(t, err)
	require.Equal(t, ring.CurrentKeyID(), p.KeyID)
	cert, key, err := sealing.OpenPair(ring, row, p)
	require.NoError(t, err)
	require.Equal(t, "cert", string(cert))
	require.Equal(t, "key", string(key))
	for _, at := range []sealing.Place{v2, {Tenant: "globex", EntryID: "edge"}, {Tenant: "acme", EntryID: "other"}} {
		_, _, err = sealing.OpenPair(ring, at, p)
		require.ErrorIs(t, err, envelope.ErrDecrypt, "%v", at)
	}
	swapped := sealing.Pair{Cert: p.Key, Key: p.Cert, KeyID: p.KeyID}
	_, _, err = sealing.OpenPair(ring, row, swapped)
	require.ErrorIs(t, err, envelope.ErrDecrypt)

	bundle, err := sealing.SealPair(ring, v2, secret.PEM("ca"), nil)
	require.NoError(t, err)
	require.Nil(t, bundle.Key)
	cert, key, err = sealing.OpenPair(ring, v2, bundle)
	require.NoError(t, err)
	require.Equal(t, "ca", string(cert))
	require.Nil(t, key)

	again, err := sealing.SealPair(ring, row, secret.PEM("cert"), secret.PEM("key"))
	require.NoError(t, err)
	require.NotEqual(t, p.Stamp(), again.Stamp(), "sealed again: a new stamp")
	old := make([]byte, 32)
	for i := range old {
		old[i] = byte(i) // testRing's key
	}
	next, err := envelope.NewRing(bytes.Repeat([]byte{7}, 32), old)
	require.NoError(t, err)
	rewrapped, err := sealing.RewrapPair(next, row, p)
	require.NoError(t, err)
	require.Equal(t, next.CurrentKeyID(), rewrapped.KeyID)
	require.NotEqual(t, p.KeyID, rewrapped.KeyID)
	require.Equal(t, p.Stamp(), rewrapped.Stamp(), "a rewrap keeps the stamp")
}
