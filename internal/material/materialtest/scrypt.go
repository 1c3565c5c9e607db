package materialtest

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/scrypt"
)

var (
	oidPBES2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidScrypt    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidAES256CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

// ScryptKeyPEM returns key as an ENCRYPTED PRIVATE KEY PEM block under pass: PKCS#8, PBES2
// with scrypt of cost n, r, p and AES-256-CBC, as `openssl pkcs8 -topk8 -scrypt` writes it.
func ScryptKeyPEM(t testing.TB, key crypto.Signer, pass string, n, r, p int) []byte {
	t.Helper()
	out, err := EncryptScrypt(key, pass, n, r, p)
	require.NoError(t, err)
	return out
}

// EncryptScrypt is ScryptKeyPEM returning its error, for callers without a testing.TB.
func EncryptScrypt(key crypto.Signer, pass string, n, r, p int) ([]byte, error) {
	plain, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal PKCS#8 key: %w", err)
	}
	salt, iv := make([]byte, 16), make([]byte, aes.BlockSize)
	_, _ = rand.Read(salt)
	_, _ = rand.Read(iv)
	k, err := scrypt.Key([]byte(pass), salt, n, r, p, 32)
	if err != nil {
		return nil, fmt.Errorf("derive the key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	for range pad {
		plain = append(plain, byte(pad))
	}
	data := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(data, plain)
	return scryptPEM(salt, iv, data, n, r, p)
}

// ScryptParamsPEM is an ENCRYPTED PRIVATE KEY PEM block naming scrypt with n, r, p, whose
// ciphertext is random: for parameters the store must refuse before deriving anything
// (deriving them here could cost gigabytes).
func ScryptParamsPEM(t testing.TB, n, r, p int64) []byte {
	t.Helper()
	salt, iv, data := make([]byte, 16), make([]byte, aes.BlockSize), make([]byte, 64)
	_, _ = rand.Read(data)
	out, err := scryptPEM(salt, iv, data, n, r, p)
	require.NoError(t, err)
	return out
}

func scryptPEM[N int | int64](salt, iv, data []byte, n, r, p N) ([]byte, error) {
	type scryptParams struct {
		Salt    []byte
		N, R, P *big.Int
	}
	type pbes2Params struct{ KDF, Enc pkix.AlgorithmIdentifier }
	type encryptedPrivateKeyInfo struct {
		Algorithm pkix.AlgorithmIdentifier
		Data      []byte
	}
	sp, err := asn1.Marshal(scryptParams{Salt: salt, N: big.NewInt(int64(n)), R: big.NewInt(int64(r)), P: big.NewInt(int64(p))})
	if err != nil {
		return nil, err
	}
	ivDER, err := asn1.Marshal(iv)
	if err != nil {
		return nil, err
	}
	params, err := asn1.Marshal(pbes2Params{
		KDF: pkix.AlgorithmIdentifier{Algorithm: oidScrypt, Parameters: asn1.RawValue{FullBytes: sp}},
		Enc: pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}},
	})
	if err != nil {
		return nil, err
	}
	der, err := asn1.Marshal(encryptedPrivateKeyInfo{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: params}}, Data: data})
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), nil
}
