// Package material validates the TLS material of a certificate-store entry and derives its
// metadata. It owns the rules for what a CA bundle, a client pair and a server pair may
// contain, the decoding of every accepted encoding (PEM, DER, PKCS#12, encrypted keys) into
// the PEM that is stored, and the reading of material files under LOOPZE_FILE_ROOTS
// (optional for the default tenant, required for any other). It touches neither the database
// nor HTTP: the API, TLS resolution at connection init and restore all call it alike.
//
// Material holds private keys. Nothing in this package prints PEM or key bytes: issues and
// errors name fields, block numbers and paths, never contents.
package material

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Kind is the type of a certificate-store entry.
type Kind string

// The entry kinds.
const (
	// CABundle is one or more CA certificates used to verify peers; it carries no key.
	CABundle Kind = "ca-bundle"
	// ClientPair is a certificate chain and private key presented by a TLS client.
	ClientPair Kind = "client-pair"
	// ServerPair is a certificate chain and private key presented by a TLS server.
	ServerPair Kind = "server-pair"
)

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	switch k {
	case CABundle, ClientPair, ServerPair:
		return true
	}
	return false
}

// IsPair reports whether k needs a private key.
func (k Kind) IsPair() bool { return k == ClientPair || k == ServerPair }

// MaxSize is the largest PEM field or material file accepted, in bytes. Real bundles are a
// few KiB; the limit keeps a wrong path (a log file, a disk image) from being slurped.
const MaxSize = 256 << 10

// Issue is one problem or warning about material, naming the field it is about ("certPem",
// "keyPem", "certPath", "keyPath", "type", or whatever field names the caller passed in
// Fields). Message is for an operator and never contains PEM or key bytes.
type Issue struct {
	Field   string
	Message string
}

// String renders the issue as "field: message".
func (i Issue) String() string { return i.Field + ": " + i.Message }

// FieldType is the field named by an issue about the entry kind itself.
const FieldType = "type"

// Fields lets callers name the fields in issues: API entries use certPem/keyPem or
// certPath/keyPath; a flow node's tls block uses e.g. "tls.clientCertFile". Empty names
// fall back to PEMFields.
type Fields struct {
	Cert, Key string
	// Passphrase names the passphrase file of a file-sourced entry (LoadFilesWith).
	Passphrase string
}

// PEMFields names the fields of an inline entry.
var PEMFields = Fields{Cert: "certPem", Key: "keyPem"}

// PathFields names the fields of a file-sourced entry.
var PathFields = Fields{Cert: "certPath", Key: "keyPath", Passphrase: "passphraseFile"}

func (f Fields) withDefaults() Fields {
	if f.Cert == "" {
		f.Cert = PEMFields.Cert
	}
	if f.Key == "" {
		f.Key = PEMFields.Key
	}
	return f
}

// Metadata is what the store shows about an entry, derived from its leaf (first) certificate.
type Metadata struct {
	// FingerprintSHA256 is the SHA-256 of the leaf's DER, uppercase hex, colon separated:
	// exactly what `openssl x509 -noout -fingerprint -sha256` prints after "=".
	FingerprintSHA256 string `json:"fingerprintSha256" doc:"SHA-256 of the leaf certificate, as openssl x509 -noout -fingerprint -sha256 prints it" example:"3A:1F:...:9C"`
	// Subject and Issuer are the leaf's names as crypto/x509's Name.String prints them
	// (RFC 2253 order and escaping, e.g. "CN=edge,O=Acme").
	Subject string `json:"subject" doc:"The leaf's subject, RFC 2253" example:"CN=Internal Root CA,O=Acme"`
	Issuer  string `json:"issuer" doc:"The leaf's issuer, RFC 2253" example:"CN=Internal Root CA,O=Acme"`
	// SerialNumber is the magnitude of the leaf's serial in uppercase hex, two digits per
	// byte, colon separated ("8F:01"): `openssl x509 -noout -serial` with colons added. A
	// negative serial (tolerated by some old CAs) is prefixed with "-".
	SerialNumber string `json:"serialNumber" doc:"The leaf's serial number, uppercase hex, colon separated" example:"01:F4"`
	// NotBefore and NotAfter bound the leaf's validity, in UTC.
	NotBefore time.Time `json:"notBefore" doc:"Start of the leaf's validity"`
	NotAfter  time.Time `json:"notAfter" doc:"End of the leaf's validity"`
	// DNSNames are the leaf's DNS subject alternative names; never nil.
	DNSNames []string `json:"dnsNames" doc:"The leaf's DNS subject alternative names"`
	// CertCount is the number of certificates in the material.
	CertCount int `json:"certCount" doc:"Certificates in the material, leaf and chain"`
	// KeyAlgorithm describes the leaf's public key: "RSA-2048", "ECDSA-P256", "Ed25519", ...
	KeyAlgorithm string `json:"keyAlgorithm" doc:"The leaf's public key algorithm and size" example:"ECDSA-P256"`
	// HasPrivateKey reports whether the material carries a private key.
	HasPrivateKey bool `json:"hasPrivateKey" doc:"Whether the material carries a private key (never returned)"`
}

// InUTC is m with its times in UTC and its DNS names never nil, as every encoding of
// metadata (the API, the credentials file) writes it.
func (m Metadata) InUTC() Metadata {
	m.NotBefore, m.NotAfter = m.NotBefore.UTC(), m.NotAfter.UTC()
	if m.DNSNames == nil {
		m.DNSNames = []string{}
	}
	return m
}

// Material is parsed, validated material. It holds the private key: never log it.
type Material struct {
	// Metadata is derived from the leaf certificate.
	Metadata Metadata
	// Certs are the certificates in the order given, leaf first.
	Certs []*x509.Certificate
	// Key is the private key of a pair, matching Certs[0]; nil for a ca-bundle.
	Key crypto.PrivateKey
	// Warnings are problems that do not make the material invalid (expiry, broken chain,
	// weak keys, non-CA certificates in a bundle).
	Warnings []Issue
}

// ErrNoPrivateKey is returned by TLSCertificate for material that carries no key.
var ErrNoPrivateKey = errors.New("material has no private key")

// TLSCertificate returns the pair as a tls.Certificate with the full chain and Leaf set,
// ready for tls.Config.Certificates or GetClientCertificate.
func (m *Material) TLSCertificate() (tls.Certificate, error) {
	if m == nil || m.Key == nil || len(m.Certs) == 0 {
		return tls.Certificate{}, fmt.Errorf("build TLS certificate: %w", ErrNoPrivateKey)
	}
	chain := make([][]byte, len(m.Certs))
	for i, c := range m.Certs {
		chain[i] = c.Raw
	}
	return tls.Certificate{Certificate: chain, PrivateKey: m.Key, Leaf: m.Certs[0]}, nil
}

// CertPool returns a pool holding every certificate of the material, for RootCAs or
// ClientCAs. It is meant for bundles; for a pair it holds the pair's chain.
func (m *Material) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	if m == nil {
		return pool
	}
	for _, c := range m.Certs {
		pool.AddCert(c)
	}
	return pool
}
