package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPublicKeysFileRefused(t *testing.T) {
	t.Parallel()
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(key("ec-a").signer)
	require.NoError(t, err)
	privatePEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	ed := jwkOf(t, "e", key("ed-a").public())

	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"empty", "file is empty", nil},
		{"not PEM", "neither PEM nor JWKS", []byte("hello")},
		{"private key", `type "PRIVATE KEY"`, privatePEM},
		{"public then garbage", "after the last PEM block", append(publicPEM(t, key("ed-a").public()), "trailing"...)},
		{"small RSA", "below the 2048-bit minimum", publicPEM(t, &smallRSA.PublicKey)},
		{"P-384", "not P-256", publicPEM(t, &p384.PublicKey)},
		{"corrupt block", "PEM block 1", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})},
		{"JWKS not JSON", "parse JWKS", []byte("{keys")},
		{"JWKS empty", "no usable", []byte(`{"keys":[]}`)},
		{"JWKS only encryption keys", "no usable", jwksJSON(t, merge(ed, map[string]any{"use": "enc"}))},
		{"JWKS only foreign algs", "no usable", jwksJSON(t, merge(ed, map[string]any{"alg": "ES384"}))},
		{"JWKS bad base64", "JWKS key 0", jwksJSON(t, merge(ed, map[string]any{"x": "***"}))},
		{"JWKS short Ed25519", "32 bytes", jwksJSON(t, merge(ed, map[string]any{"x": "AAAA"}))},
		{"JWKS EC point off curve", "JWKS key 0", jwksJSON(t, merge(jwkOf(t, "c", key("ec-a").public()), map[string]any{"y": strings.Repeat("A", 43)}))},
		{"JWKS RSA missing e", `"e" is missing`, jwksJSON(t, merge(jwkOf(t, "r", key("rsa-a").public()), map[string]any{"e": ""}))},
	} {
		_, err := loadPublicKeys(writeTemp(t, "keys", tc.data))
		require.ErrorContains(t, err, tc.want, tc.name)
		require.Contains(t, err.Error(), "keys", "%s: error names the file", tc.name)
		require.NotContains(t, err.Error(), "BEGIN", tc.name)
	}

	// The private key's bytes never reach the error.
	_, err = NewVerifier(Config{PublicKeysFile: writeTemp(t, "keys.pem", privatePEM)})
	require.Error(t, err)
	body := strings.Join(strings.Split(string(privatePEM), "\n")[1:3], "")
	require.NotContains(t, err.Error(), body[:20])
}

func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// Identity providers publish encryption keys and other algorithms next to signing keys;
// the usable ones are kept, the rest skipped.
func TestJWKSSkipsUnusableKeys(t *testing.T) {
	t.Parallel()
	data := jwksJSON(t,
		merge(jwkOf(t, "enc", key("rsa-b").public()), map[string]any{"use": "enc"}),
		map[string]any{"kty": "EC", "crv": "P-521", "kid": "big", "x": "AA", "y": "AA"},
		map[string]any{"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
		merge(jwkOf(t, "ps", key("rsa-b").public()), map[string]any{"alg": "PS256"}),
		jwkOf(t, "sig", key("rsa-a").public()),
	)
	keys, err := parsePublicKeys(data)
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Equal(t, "sig", keys[0].kid)
	require.Equal(t, "RS256", keys[0].alg)
}

func TestPKCS1PublicKey(t *testing.T) {
	t.Parallel()
	pub := key("rsa-a").public().(*rsa.PublicKey)
	data := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
	keys, err := parsePublicKeys(data)
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.True(t, pub.Equal(keys[0].key))
}

func TestPublicKeysFileUnreadable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "missing.pem")
	_, err := loadPublicKeys(path)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Contains(t, err.Error(), path)
}

func FuzzParsePublicKeys(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parsePublicKeys(data)
		if err != nil {
			require.Empty(t, keys)
			require.NotContains(t, err.Error(), "-----BEGIN")
			return
		}
		require.NotEmpty(t, keys)
		for _, k := range keys {
			require.Contains(t, []string{"RS256", "ES256", "EdDSA"}, k.alg)
			require.NotNil(t, k.key)
		}
	})
}
