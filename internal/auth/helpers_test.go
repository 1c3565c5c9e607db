package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// testSecret is exactly MinHMACSecretLen bytes.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testKey is a generated signing key and the jwt method it signs with. Keys are made once
// per test binary because RSA generation is slow under -race.
type testKey struct {
	signer crypto.Signer
	method jwt.SigningMethod
}

func (k testKey) public() crypto.PublicKey { return k.signer.Public() }

var testKeys = sync.OnceValue(func() map[string]testKey {
	keys := map[string]testKey{}
	for _, name := range []string{"rsa-a", "rsa-b"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[name] = testKey{k, jwt.SigningMethodRS256}
	}
	for _, name := range []string{"ec-a", "ec-b"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		keys[name] = testKey{k, jwt.SigningMethodES256}
	}
	for _, name := range []string{"ed-a", "ed-b"} {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		keys[name] = testKey{k, jwt.SigningMethodEdDSA}
	}
	return keys
})

func key(name string) testKey { return testKeys()[name] }

// claimsFor is a valid claim set for acme/alice with the given role.
func claimsFor(role string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":    "alice",
		"tenant": "acme",
		"role":   role,
		"iat":    now.Unix(),
		"exp":    now.Add(time.Hour).Unix(),
	}
}

func sign(t *testing.T, method jwt.SigningMethod, k any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(k)
	require.NoError(t, err)
	return s
}

func signWith(t *testing.T, k testKey, kid string, c jwt.MapClaims) string {
	t.Helper()
	return sign(t, k.method, k.signer, kid, c)
}

func publicPEM(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func certificatePEM(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(-time.Minute), // expired on purpose: only the key counts
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// jwkOf builds a JWK by hand, as an identity provider would publish it.
func jwkOf(t *testing.T, kid string, pub crypto.PublicKey) map[string]any {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]any{"use": "sig"}
	if kid != "" {
		m["kid"] = kid
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		m["kty"], m["alg"] = "RSA", "RS256"
		m["n"] = enc(k.N.Bytes())
		m["e"] = enc(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		raw, err := k.Bytes()
		require.NoError(t, err)
		m["kty"], m["crv"], m["alg"] = "EC", "P-256", "ES256"
		m["x"], m["y"] = enc(raw[1:33]), enc(raw[33:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["alg"] = "OKP", "Ed25519", "EdDSA"
		m["x"] = enc(k)
	default:
		t.Fatalf("no JWK for %T", pub)
	}
	return m
}

func jwksJSON(t *testing.T, keys ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	require.NoError(t, err)
	return b
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

func newVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	require.NoError(t, err)
	return v
}
