package credfile

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/sealing"
)

// sealV1 writes doc as a version 1 file, sealed under ring's current master key, as files
// were written before tenant keys: what Open must still read.
func sealV1(t testing.TB, ring *envelope.Ring, doc *Document) []byte {
	t.Helper()
	enc, err := encode(doc)
	require.NoError(t, err)
	defer enc.Release()
	h := Header{Format: Format, Version: Version1, Tenant: doc.Tenant, Generation: doc.Generation, Cipher: Cipher}
	keyID, sealed, err := ring.SealWithCurrent(enc.plain, h.AAD())
	require.NoError(t, err)
	h.KeyID = keyID
	out, err := encodeFile(h, sealed)
	require.NoError(t, err)
	return out
}

// fileKeyFor makes version n of tenant's key (root), wraps it under the master key
// master (32 bytes), and returns the file key it derives with the header's reference, as
// the export job would.
func fileKeyFor(t testing.TB, master, root []byte, tenant string, n int) FileKey {
	t.Helper()
	block, err := aes.NewCipher(master)
	require.NoError(t, err)
	aead, err := cipher.NewGCM(block)
	require.NoError(t, err)
	wrapped, err := envelope.WrapKey(aead, root, sealing.TenantKeyWrap(tenant, n))
	require.NoError(t, err)
	fk, err := sealing.DeriveTenantKey(root, sealing.PurposeFile, tenant, n)
	require.NoError(t, err)
	return FileKey{Key: fk, TenantKey: TenantKeyRef{Version: n, MasterKeyID: envelope.KeyIDOf(master),
		Wrapped: base64.StdEncoding.EncodeToString(wrapped)}}
}
