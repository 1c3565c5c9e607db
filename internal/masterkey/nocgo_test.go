//go:build !cgo

package masterkey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/masterkey"
)

// TestPKCS11WithoutCgo: a binary built without cgo refuses a pkcs11: URI with one line
// saying so, naming the URI without its PIN.
func TestPKCS11WithoutCgo(t *testing.T) {
	t.Parallel()
	uri := "pkcs11:token=loopze;object=master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=2468"
	r, err := masterkey.Open(uri, t.TempDir(), nil, nil)
	require.Nil(t, r)
	require.ErrorIs(t, err, masterkey.ErrNoPKCS11)
	require.ErrorContains(t, err, "built without PKCS#11 support")
	require.ErrorContains(t, err, "pkcs11:token=loopze;object=master")
	require.NotContains(t, err.Error(), "2468")
	require.NotContains(t, err.Error(), "\n")
}
