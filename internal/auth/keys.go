package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"

	"github.com/golang-jwt/jwt/v5"
)

// minRSABits refuses RSA keys too small to resist factoring; RFC 7518 requires 2048.
const minRSABits = 2048

// errNoUsableKey is returned when a keys file parses but yields nothing we can verify with.
var errNoUsableKey = errors.New("no usable RS256, ES256 or EdDSA public key")

// publicKey is one configured verification key and the single algorithm it verifies.
// Binding each key to one algorithm is what keeps an RSA key from ever being offered to
// another algorithm's verifier.
type publicKey struct {
	kid string // empty for PEM keys, which carry no key ID
	alg string // jwt algorithm name: RS256, ES256 or EdDSA
	key crypto.PublicKey
}

// loadPublicKeys reads a PEM or JWKS file of verification keys. Errors name the file and
// the offending block or key position, never the file's contents.
func loadPublicKeys(path string) ([]publicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public keys: %w", err)
	}
	keys, err := parsePublicKeys(data)
	if err != nil {
		return nil, fmt.Errorf("public keys file %s: %w", path, err)
	}
	return keys, nil
}

// parsePublicKeys tells the two formats apart by their first byte: a JWKS is a JSON
// object, PEM starts with armour.
func parsePublicKeys(data []byte) ([]publicKey, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return parseJWKS(trimmed)
	}
	return parsePEMKeys(trimmed)
}

func parsePEMKeys(data []byte) ([]publicKey, error) {
	var keys []publicKey
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var pub crypto.PublicKey
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			cert, err = x509.ParseCertificate(block.Bytes)
			if err == nil {
				pub = cert.PublicKey
			}
		default:
			// Naming the type helps the operator who pasted a private key by mistake,
			// without repeating any of its bytes.
			return nil, fmt.Errorf("PEM block %d: type %q is not a PUBLIC KEY or CERTIFICATE", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		k, err := newPublicKey("", pub)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, k)
	}
	switch {
	case len(data) == 0:
		return nil, errors.New("file is empty")
	case len(keys) == 0:
		return nil, errors.New("neither PEM nor JWKS")
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, errors.New("content after the last PEM block is not PEM")
	}
	return keys, nil
}

// newPublicKey picks the one algorithm a key verifies.
func newPublicKey(kid string, pub crypto.PublicKey) (publicKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return publicKey{}, fmt.Errorf("RSA key of %d bits is below the %d-bit minimum", k.N.BitLen(), minRSABits)
		}
		return publicKey{kid: kid, alg: jwt.SigningMethodRS256.Alg(), key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return publicKey{}, fmt.Errorf("ECDSA curve %s is not P-256 (ES256)", k.Curve.Params().Name)
		}
		return publicKey{kid: kid, alg: jwt.SigningMethodES256.Alg(), key: k}, nil
	case ed25519.PublicKey:
		return publicKey{kid: kid, alg: jwt.SigningMethodEdDSA.Alg(), key: k}, nil
	}
	return publicKey{}, fmt.Errorf("unsupported public key type %T", pub)
}

// jwk holds the members of RFC 7517/7518/8037 keys that verification needs.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads {"keys": [...]}. Identity providers publish signing and encryption keys,
// and sometimes algorithms we do not accept, side by side; such keys are skipped rather
// than refused so that their published document can be used as is. A key that claims to
// be a signing key of a supported type but does not parse is an error: silently dropping
// it would leave the operator wondering why valid tokens fail.
func parseJWKS(data []byte) ([]publicKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	var keys []publicKey
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, alg, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d: %w", i, err)
		}
		if pub == nil || (k.Alg != "" && k.Alg != alg) {
			continue
		}
		keys = append(keys, publicKey{kid: k.Kid, alg: alg, key: pub})
	}
	if len(keys) == 0 {
		return nil, errNoUsableKey
	}
	return keys, nil
}

// publicKey returns a nil key, without error, for types and curves we do not verify with.
func (k jwk) publicKey() (crypto.PublicKey, string, error) {
	switch {
	case k.Kty == "RSA":
		n, err := b64(k.N, "n")
		if err != nil {
			return nil, "", err
		}
		e, err := b64(k.E, "e")
		if err != nil {
			return nil, "", err
		}
		if len(e) == 0 || len(e) > 4 {
			return nil, "", errors.New("RSA exponent out of range")
		}
		exp := new(big.Int).SetBytes(e)
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}
		if pub.E < 3 || pub.E%2 == 0 {
			return nil, "", errors.New("RSA exponent out of range")
		}
		pk, err := newPublicKey(k.Kid, pub)
		if err != nil {
			return nil, "", err
		}
		return pk.key, pk.alg, nil
	case k.Kty == "EC" && k.Crv == "P-256":
		x, err := b64(k.X, "x")
		if err != nil {
			return nil, "", err
		}
		y, err := b64(k.Y, "y")
		if err != nil {
			return nil, "", err
		}
		if len(x) != 32 || len(y) != 32 {
			return nil, "", errors.New("P-256 coordinates must be 32 bytes each")
		}
		// ParseUncompressedPublicKey checks the point is on the curve, which building an
		// ecdsa.PublicKey by hand would not.
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, "", fmt.Errorf("P-256 key: %w", err)
		}
		return pub, jwt.SigningMethodES256.Alg(), nil
	case k.Kty == "OKP" && k.Crv == "Ed25519":
		x, err := b64(k.X, "x")
		if err != nil {
			return nil, "", err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, "", fmt.Errorf("Ed25519 key must be %d bytes", ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(x), jwt.SigningMethodEdDSA.Alg(), nil
	}
	return nil, "", nil
}

// b64 decodes a base64url member without padding, as RFC 7515 section 2 requires.
func b64(s, member string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("member %q is missing", member)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("member %q is not base64url: %w", member, err)
	}
	return b, nil
}
