package credfile

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
)

// TestResealMovesTheWrappingOnly: a file sealed again under its tenant key wrapped by
// another master key holds the same document, opens with the new master key and not with
// the old one, and is sealed under a new nonce. What is not a file Seal wrote under the
// same file key is refused, for the caller to encode the document anew.
func TestResealMovesTheWrappingOnly(t *testing.T) {
	t.Parallel()
	oldMaster, newMaster := append(make([]byte, 31), 1), append(make([]byte, 31), 2)
	root := append(make([]byte, 31), 9)
	data, h, err := Seal(fileKeyFor(t, oldMaster, root, "acme", 2), sampleDoc(t, "acme", 7))
	require.NoError(t, err)
	oldRing, err := envelope.NewRing(oldMaster)
	require.NoError(t, err)
	newRing, err := envelope.NewRing(newMaster)
	require.NoError(t, err)
	want, _, err := Open(Keys{Ring: oldRing}, data, "acme")
	require.NoError(t, err)

	fk := fileKeyFor(t, newMaster, root, "acme", 2)
	out, got, err := Reseal(fk, data)
	require.NoError(t, err)
	require.Equal(t, fk.TenantKey, *got.TenantKey)
	require.Equal(t, h.KeyID, got.KeyID)
	require.Equal(t, h.Generation, got.Generation)
	doc, oh, err := Open(Keys{Ring: newRing}, out, "acme")
	require.NoError(t, err)
	require.Equal(t, got, oh)
	require.Equal(t, want, doc)
	_, _, err = Open(Keys{Ring: oldRing}, out, "acme")
	require.ErrorIs(t, err, envelope.ErrUnknownKey, "the old master key no longer opens it")
	sealedOld, err := ParseHeader(data)
	require.NoError(t, err)
	require.NotEqual(t, sealedOld.TenantKey.Wrapped, got.TenantKey.Wrapped)
	tail := func(b []byte) []byte { end := bytes.LastIndexByte(b, '"'); return b[end-64 : end] }
	require.NotEqual(t, tail(data), tail(out), "a new nonce")

	mid := bytes.LastIndexByte(data, '"') - 200
	flipped := bytes.Clone(data)
	flipped[mid] = 'A'
	if data[mid] == 'A' {
		flipped[mid] = 'B'
	}
	end := bytes.LastIndexByte(data, '}')
	cases := []struct {
		name string
		key  FileKey
		data []byte
		want error
	}{
		{"another file key", fileKeyFor(t, newMaster, append(make([]byte, 31), 8), "acme", 2), data, envelope.ErrUnknownKey},
		{"another tenant key version", fileKeyFor(t, newMaster, root, "acme", 3), data, envelope.ErrUnknownKey},
		{"version 1", fk, sealV1(t, oldRing, sampleDoc(t, "acme", 7)), ErrNotCredentialsFile},
		{"ciphertext altered", fk, flipped, envelope.ErrDecrypt},
		{"a field after the ciphertext", fk, append(bytes.Clone(data[:end]), []byte(`, "x": 1}`)...), ErrNotCredentialsFile},
		{"an escape in the ciphertext", fk, bytes.Replace(data, []byte(`"ciphertext": "`), []byte(`"ciphertext": "\/`), 1), ErrNotCredentialsFile},
		{"truncated", fk, data[:len(data)/2], ErrNotCredentialsFile},
		{"not a credentials file", fk, []byte(`{"hello":"world"}`), ErrNotCredentialsFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := Reseal(tc.key, tc.data)
			require.ErrorIs(t, err, tc.want)
		})
	}
}
