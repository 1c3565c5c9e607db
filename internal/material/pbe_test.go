package material

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/scrypt"
)

// testPass is the passphrase of the keys these tests encrypt.
const testPass = "pbe-test-pass"

// scryptAlg is the PBES2 key derivation identifier of scrypt with n, r, p.
func scryptAlg(t testing.TB, salt []byte, n, r, p int64) pkix.AlgorithmIdentifier {
	t.Helper()
	params, err := asn1.Marshal(scryptParams{Salt: salt, N: big.NewInt(n), R: big.NewInt(r), P: big.NewInt(p)})
	require.NoError(t, err)
	return pkix.AlgorithmIdentifier{Algorithm: oidScrypt, Parameters: asn1.RawValue{FullBytes: params}}
}

// pbes2 is the PBES2 algorithm identifier of kdf with AES-256-CBC under iv.
func pbes2(t testing.TB, kdf pkix.AlgorithmIdentifier, iv []byte) pkix.AlgorithmIdentifier {
	t.Helper()
	ivDER, err := asn1.Marshal(iv)
	require.NoError(t, err)
	params, err := asn1.Marshal(pbes2Params{KDF: kdf, Enc: pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}}})
	require.NoError(t, err)
	return pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: params}}
}

// encryptedPKCS8 is an EncryptedPrivateKeyInfo under alg whose data is plain encrypted
// with key (nil: random bytes, which only a derivation that is never run may meet).
func encryptedPKCS8(t testing.TB, alg pkix.AlgorithmIdentifier, iv, key, plain []byte) []byte {
	t.Helper()
	var data []byte
	if key == nil {
		data = make([]byte, 64)
		_, _ = rand.Read(data)
	} else {
		data = cbcEncrypt(t, key, iv, plain)
	}
	der, err := asn1.Marshal(encryptedPrivateKeyInfo{Algorithm: alg, Data: data})
	require.NoError(t, err)
	return der
}

func cbcEncrypt(t testing.TB, key, iv, plain []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	n := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(append([]byte(nil), plain...), make([]byte, n)...)
	for i := len(plain); i < len(padded); i++ {
		padded[i] = byte(n)
	}
	out := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, padded)
	return out
}

// scryptKey is a new P-256 key as PKCS#8, encrypted under scrypt with n, r, p.
func scryptKey(t testing.TB, n, r, p int64) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	plain, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	salt, iv := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	key, err := scrypt.Key([]byte(testPass), salt, int(n), int(r), int(p), 32)
	require.NoError(t, err)
	return encryptedPKCS8(t, pbes2(t, scryptAlg(t, salt, n, r, p), iv), iv, key, plain)
}

// allocated is how many bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestScryptBoundIsTheWholeAllocation: scrypt with N=2, r=131072, p=16 needs 128·N·r =
// 32 MiB for its table but 128·r·p = 256 MiB for its blocks. It is refused for what it
// would allocate in all, before anything is derived or asked of the budget.
func TestScryptBoundIsTheWholeAllocation(t *testing.T) {
	salt, iv := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	der := encryptedPKCS8(t, pbes2(t, scryptAlg(t, salt, 2, 131072, 16), iv), iv, nil, nil)
	d, budget := testDeriver(context.Background())
	var err error
	n := allocated(func() { _, err = decryptPKCS8(d, der, []byte(testPass)) })
	require.ErrorIs(t, err, errOverLimit)
	require.Less(t, n, uint64(1<<20), "refused before deriving: nothing large allocated")
	require.Zero(t, d.n)
	require.Zero(t, budget.count())
}

// TestScryptParameterBounds: r, p and N are each bounded, N from below too, and what they
// allocate together; every refusal comes before the derivation. What OpenSSL writes by
// default decrypts, and is charged to the budget for all it allocates.
func TestScryptParameterBounds(t *testing.T) {
	t.Parallel()
	salt, iv := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	for _, tc := range []struct {
		name    string
		n, r, p int64
		kind    error
		want    string
	}{
		{"r over its cap", 1024, 33, 1, errOverLimit, "r=33 is over the limit of 32"},
		{"p over its cap", 1024, 8, 17, errOverLimit, "p=17 is over the limit of 16"},
		{"N under the minimum", 512, 8, 1, errUnsupported, "under the minimum of 1024"},
		{"N not a power of two", 3000, 8, 1, errMalformedPBE, "not a power of two"},
		{"N huge", 1 << 40, 1, 1, errOverLimit, "more than the 32 MiB limit"},
		{"table at the bound, blocks past it", 1 << 15, 8, 1, errOverLimit, "needs 33 MiB"},
		{"table and blocks past the bound", 1 << 14, 16, 16, errOverLimit, "needs 33 MiB"},
		{"r zero", 1024, 0, 1, errMalformedPBE, "not positive"},
		{"p negative", 1024, 8, -1, errMalformedPBE, "not positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der := encryptedPKCS8(t, pbes2(t, scryptAlg(t, salt, tc.n, tc.r, tc.p), iv), iv, nil, nil)
			d, budget := testDeriver(context.Background())
			_, err := decryptPKCS8(d, der, []byte(testPass))
			require.ErrorIs(t, err, tc.kind)
			require.ErrorContains(t, err, tc.want)
			require.Zero(t, d.n)
			require.Zero(t, budget.count())
		})
	}

	// OpenSSL's default (N=16384, r=8, p=1) and RFC 7914's p=16 with a small N pass, each
	// charged with its whole allocation.
	for _, p := range [][3]int64{{16384, 8, 1}, {1024, 8, 16}} {
		d, budget := testDeriver(context.Background())
		plain, err := decryptPKCS8(d, scryptKey(t, p[0], p[1], p[2]), []byte(testPass))
		require.NoError(t, err)
		_, err = x509.ParsePKCS8PrivateKey(plain)
		require.NoError(t, err)
		require.Equal(t, 1, d.n)
		require.Equal(t, []int64{128*p[1]*(p[0]+2*p[2]+2) + derivationSlack}, budget.asked)
	}
}

// TestPBKDF2ParameterBounds: iteration counts and stated key lengths are bounded before
// the derivation.
func TestPBKDF2ParameterBounds(t *testing.T) {
	t.Parallel()
	salt, iv := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	for _, tc := range []struct {
		name       string
		iterations int
		keyLength  int
		want       string
	}{
		{"iterations", MaxKDFIterations + 1, 0, "over the limit of 1000000"},
		{"key length", 2048, 1 << 20, "stated key length 1048576"},
		{"zero iterations", 0, 0, "not positive"},
	} {
		der := encryptedPKCS8(t, pbes2(t, pbkdf2Alg(t, salt, tc.iterations, tc.keyLength), iv), iv, nil, nil)
		d, budget := testDeriver(context.Background())
		_, err := decryptPKCS8(d, der, []byte(testPass))
		require.ErrorContains(t, err, tc.want, tc.name)
		require.Zero(t, d.n)
		require.Zero(t, budget.count())
	}
}
