// Package credfiletest writes credentials files for tests without a database: sealed as
// the export job seals them (version 2, under the file key of a tenant key wrapped under a
// master key), as files of the earlier format (version 1, under the master key itself),
// and the runtime key files that open them.
package credfiletest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// TenantKey is version n of a test tenant key of tenant under master: the same bytes for
// the same master key, tenant and version, so files sealed apart share keys as a server's
// do.
func TenantKey(master []byte, tenant string, n int) []byte {
	sum := sha256.Sum256(append(append([]byte("credfiletest tenant key\x00"), master...), tenant+"\x00"+strconv.Itoa(n)...))
	return sum[:]
}

// FileKey is the file key of version n of tenant's test key, wrapped under master (32
// bytes) as the server wraps it.
func FileKey(t testing.TB, master []byte, tenant string, n int) credfile.FileKey {
	t.Helper()
	root := TenantKey(master, tenant, n)
	block, err := aes.NewCipher(master)
	require.NoError(t, err)
	aead, err := cipher.NewGCM(block)
	require.NoError(t, err)
	wrapped, err := envelope.WrapKey(aead, root, sealing.TenantKeyWrap(tenant, n))
	require.NoError(t, err)
	fk, err := sealing.DeriveTenantKey(root, sealing.PurposeFile, tenant, n)
	require.NoError(t, err)
	return credfile.FileKey{Key: fk, TenantKey: credfile.TenantKeyRef{Version: n, MasterKeyID: envelope.KeyIDOf(master),
		Wrapped: base64.StdEncoding.EncodeToString(wrapped)}}
}

// Seal writes doc as the export job does, under version 1 of its tenant's test key
// wrapped under master.
func Seal(t testing.TB, master []byte, doc *credfile.Document) []byte {
	t.Helper()
	return SealVersion(t, master, doc, 1)
}

// SealVersion is Seal under version n of the tenant's test key.
func SealVersion(t testing.TB, master []byte, doc *credfile.Document, n int) []byte {
	t.Helper()
	data, _, err := credfile.Seal(FileKey(t, master, doc.Tenant, n), doc)
	require.NoError(t, err)
	return data
}

// RuntimeKey is the runtime key file of tenant holding the given versions of its test key.
func RuntimeKey(t testing.TB, master []byte, tenant string, versions ...int) []byte {
	t.Helper()
	rk := &credfile.RuntimeKey{Tenant: tenant, Keys: map[int]secret.Bytes{}}
	for _, n := range versions {
		rk.Keys[n] = FileKey(t, master, tenant, n).Key
	}
	data, err := rk.Marshal()
	require.NoError(t, err)
	return data
}
