package material

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/secret"
)

// Encoded is material in any of the shapes the store accepts, as a client or a file hands
// it over: PEM (with the key possibly encrypted, as PKCS#8 or in OpenSSL's legacy format),
// DER, or a PKCS#12 / PFX file with its passphrase. Decode turns it into the one shape
// the store keeps.
type Encoded struct {
	CertPEM secret.PEM
	KeyPEM  secret.PEM
	// CertDER holds one or more DER certificates, concatenated; KeyDER one DER key
	// (PKCS#1, PKCS#8, SEC1, or an encrypted PKCS#8).
	CertDER secret.Bytes
	KeyDER  secret.Bytes
	// PKCS12 is a PFX holding a pair's certificate, chain and key.
	PKCS12 secret.Bytes
	// Passphrase opens PKCS12; KeyPassphrase an encrypted KeyPEM or KeyDER. Each is used
	// once, to decrypt, and goes nowhere else.
	Passphrase    secret.String
	KeyPassphrase secret.String
}

// EncodedFields names the fields of an Encoded in issues.
type EncodedFields struct {
	CertPEM, KeyPEM, CertDER, KeyDER, PKCS12, Passphrase, KeyPassphrase string
}

// InlineFields names the fields of an inline entry, as the API's bodies do.
var InlineFields = EncodedFields{CertPEM: "certPem", KeyPEM: "keyPem", CertDER: "certDer", KeyDER: "keyDer",
	PKCS12: "pkcs12", Passphrase: "passphrase", KeyPassphrase: "keyPassphrase"}

// Normalized is material decoded into what the store keeps: PEM certificates leaf first,
// then the chain in issuing order; the key as PEM (unencrypted PKCS#8 whenever it did not
// arrive as unencrypted PEM).
type Normalized struct {
	Cert, Key secret.PEM
	// Fields names the input fields Cert and Key came from, for Inspect.
	Fields Fields
	// Warnings say what normalising changed (reordered, dropped duplicates).
	Warnings []Issue
}

// Decode normalises enc and inspects the result: Inspect for every accepted encoding.
// The warnings of the normalisation come first in the material's warnings. The key
// derivations an encrypted key or a PKCS#12 needs run under kdf, and stop when ctx ends:
// err, wrapping ErrNotAdmitted, means the material could not be judged now (a full budget,
// a caller gone), not that it is wrong.
func Decode(ctx context.Context, k Kind, enc Encoded, f EncodedFields, now time.Time, kdf KDF) (*Material, *Normalized, []Issue, error) {
	sigs := newSigChecks()
	n, errs, err := normalize(newDeriver(ctx, kdf), k, enc, f, sigs)
	if err != nil || len(errs) > 0 {
		return nil, nil, errs, err
	}
	m, errs := inspect(k, n.Cert, n.Key, n.Fields, now, sigs)
	if len(errs) > 0 {
		return nil, nil, errs, nil
	}
	m.Warnings = append(append([]Issue(nil), n.Warnings...), m.Warnings...)
	return m, n, nil, nil
}

// normalizer collects the issues of one normalize call.
type normalizer struct {
	k    Kind
	f    EncodedFields
	errs []Issue
	sigs *sigChecks
	d    *deriver
	// notAdmitted is set when a key derivation was not admitted: the call stops there.
	notAdmitted error
}

func (z *normalizer) fail(field, format string, args ...any) {
	z.errs = append(z.errs, Issue{Field: field, Message: fmt.Sprintf(format, args...)})
}

// normalize decodes enc into PEM. Plain PEM passes through untouched unless its chain must
// be put in order; everything it cannot judge (malformed PEM, a key that does not match)
// is left for Inspect to report. Every issue names its field; none holds a passphrase or
// key bytes.
func normalize(d *deriver, k Kind, enc Encoded, f EncodedFields, sigs *sigChecks) (*Normalized, []Issue, error) {
	z := &normalizer{k: k, f: f, sigs: sigs, d: d}
	out := &Normalized{Cert: enc.CertPEM, Key: enc.KeyPEM, Fields: Fields{Cert: f.CertPEM, Key: f.KeyPEM}}
	has := func(b []byte) bool { return len(b) > 0 }
	for _, x := range []struct {
		name string
		data []byte
	}{{f.CertDER, enc.CertDER}, {f.KeyDER, enc.KeyDER}, {f.PKCS12, enc.PKCS12}} {
		if len(x.data) > MaxSize {
			z.fail(x.name, "is %d bytes, over the %d KiB limit", len(x.data), MaxSize>>10)
		}
	}
	if has(enc.CertPEM) && has(enc.CertDER) {
		z.fail(f.CertDER, "give the certificates in %s or in %s, not both", f.CertPEM, f.CertDER)
	}
	if has(enc.KeyPEM) && has(enc.KeyDER) {
		z.fail(f.KeyDER, "give the private key in %s or in %s, not both", f.KeyPEM, f.KeyDER)
	}
	if has(enc.PKCS12) {
		for _, x := range []struct {
			name string
			set  bool
		}{{f.CertPEM, has(enc.CertPEM)}, {f.CertDER, has(enc.CertDER)}, {f.KeyPEM, has(enc.KeyPEM)}, {f.KeyDER, has(enc.KeyDER)}} {
			if x.set && x.name != f.PKCS12 {
				z.fail(x.name, "%s carries the certificates and the key: leave %s empty", f.PKCS12, x.name)
			}
		}
		if enc.KeyPassphrase != "" && f.KeyPassphrase != f.Passphrase {
			z.fail(f.KeyPassphrase, "is for an encrypted %s or %s; the passphrase of %s goes in %s", f.KeyPEM, f.KeyDER, f.PKCS12, f.Passphrase)
		}
		if k == CABundle {
			z.fail(f.PKCS12, "is for a client-pair or server-pair: a ca-bundle carries no private key, give its certificates in %s or %s", f.CertPEM, f.CertDER)
		}
	} else if enc.Passphrase != "" && f.KeyPassphrase != f.Passphrase {
		z.fail(f.Passphrase, "is the passphrase of %s, which is not given; an encrypted key's passphrase goes in %s", f.PKCS12, f.KeyPassphrase)
	}
	if len(z.errs) > 0 {
		return nil, z.errs, nil
	}

	var (
		certs    []*x509.Certificate // decoded certificates, when the encoding gave them
		key      crypto.Signer       // a decoded key, to be written as PKCS#8
		certsNew bool                // certs did not come from CertPEM as it is
		matchKey crypto.PublicKey    // the key's public half, to find the leaf
	)
	switch {
	case has(enc.PKCS12):
		c, s, err := decodePKCS12(d, enc.PKCS12, enc.Passphrase.Reveal())
		if err != nil {
			var pe *p12Error
			switch {
			case errors.Is(err, ErrNotAdmitted):
				return nil, nil, err
			case errors.As(err, &pe) && pe.onPass && enc.Passphrase == "":
				z.fail(f.Passphrase, "%s is protected by a passphrase: give it in %s", f.PKCS12, f.Passphrase)
			case errors.As(err, &pe) && pe.onPass:
				z.fail(f.Passphrase, "%s", pe.msg)
			default:
				z.fail(f.PKCS12, "%s", err.Error())
			}
			return nil, z.errs, nil
		}
		certs, key, certsNew = c, s, true
		out.Fields = Fields{Cert: f.PKCS12, Key: f.PKCS12}
	default:
		if has(enc.CertDER) {
			certs = z.certsFromDER(enc.CertDER)
			certsNew = true
			out.Fields.Cert = f.CertDER
		} else if has(enc.CertPEM) {
			certs = cleanPEMCerts(enc.CertPEM)
		}
		switch {
		case has(enc.KeyDER):
			key = z.keyFromDER(enc.KeyDER, enc.KeyPassphrase)
			out.Fields.Key = f.KeyDER
		case has(enc.KeyPEM):
			if dk, decrypted := z.keyFromPEM(enc.KeyPEM, enc.KeyPassphrase); decrypted {
				key = dk
			} else if dk != nil {
				matchKey = dk.Public()
			}
		case enc.KeyPassphrase != "":
			z.fail(f.KeyPassphrase, "is given but there is no key to decrypt: leave it empty")
		}
	}
	if z.notAdmitted != nil {
		return nil, nil, z.notAdmitted
	}
	if len(z.errs) > 0 {
		return nil, z.errs, nil
	}
	if key != nil {
		matchKey = key.Public()
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			z.fail(out.Fields.Key, "the private key cannot be written as PKCS#8: %s", errText(err))
			return nil, z.errs, nil
		}
		out.Key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if certs != nil {
		ordered, ws, changed := orderChain(k, certs, matchKey, out.Fields.Cert, z.sigs)
		out.Warnings = ws
		if changed || certsNew {
			var buf bytes.Buffer
			for _, c := range ordered {
				_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
			}
			out.Cert = buf.Bytes()
		}
	}
	return out, nil, nil
}

// certsFromDER parses concatenated DER certificates.
func (z *normalizer) certsFromDER(der []byte) []*x509.Certificate {
	field := z.f.CertDER
	certs, err := x509.ParseCertificates(der)
	switch {
	case err == nil && len(certs) > 0:
		return certs
	case secret.LooksLikePEM(string(der)):
		z.fail(field, "holds PEM text, not DER: put it in %s", z.f.CertPEM)
	case looksLikePKCS12(der):
		z.fail(field, "holds a PKCS#12 file, not DER certificates: put it in %s with its passphrase in %s", z.f.PKCS12, z.f.Passphrase)
	case err != nil:
		z.fail(field, "does not parse as DER certificates: %s", errText(err))
	default:
		z.fail(field, "no certificate given")
	}
	return nil
}

// keyFromDER parses a DER key, decrypting an encrypted PKCS#8 with pass.
func (z *normalizer) keyFromDER(der []byte, pass secret.String) crypto.Signer {
	field := z.f.KeyDER
	if secret.LooksLikePEM(string(der)) {
		z.fail(field, "holds PEM text, not DER: put it in %s", z.f.KeyPEM)
		return nil
	}
	if k, msg := parseKeyDER(der); msg == "" {
		if pass != "" {
			z.fail(z.f.KeyPassphrase, "is given but the key in %s is not encrypted: leave it empty", field)
			return nil
		}
		return k
	}
	if !isEncryptedPKCS8(der) {
		z.fail(field, "does not parse as a DER private key (PKCS#1, PKCS#8, SEC1 or encrypted PKCS#8)")
		return nil
	}
	return z.decryptPKCS8(der, pass, field)
}

func (z *normalizer) decryptPKCS8(der []byte, pass secret.String, field string) crypto.Signer {
	if pass == "" {
		z.fail(z.f.KeyPassphrase, "the key in %s is encrypted: give its passphrase in %s", field, z.f.KeyPassphrase)
		return nil
	}
	plain, err := decryptPKCS8(z.d, der, []byte(pass.Reveal()))
	if err != nil {
		switch {
		case errors.Is(err, ErrNotAdmitted):
			z.notAdmitted = err
		case errors.Is(err, errWrongPass):
			z.fail(z.f.KeyPassphrase, "does not decrypt the key in %s (wrong passphrase?)", field)
		default:
			z.fail(field, "the encrypted key cannot be decrypted: %s", err.Error())
		}
		return nil
	}
	k, msg := parseKeyDER(plain)
	if msg != "" {
		if strings.Contains(msg, "unsupported algorithm") {
			z.fail(field, "the decrypted key %s", msg)
		} else {
			z.fail(z.f.KeyPassphrase, "does not decrypt the key in %s (wrong passphrase?)", field)
		}
		return nil
	}
	return k
}

// keyFromPEM decrypts an encrypted PEM key. It returns the key and true when it decrypted
// one; for plain PEM it returns the parsed key (or nil) and false, and the PEM stays as it
// is for Inspect, which reports whatever is wrong with it.
func (z *normalizer) keyFromPEM(data []byte, pass secret.String) (crypto.Signer, bool) {
	field := z.f.KeyPEM
	if len(data) > MaxSize {
		return nil, false
	}
	blocks, problems := scanPEM(data)
	var enc []numberedBlock
	var plain crypto.Signer
	for _, b := range blocks {
		switch {
		case b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED"):
			enc = append(enc, b)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			if k, msg := parsePrivateKey(b.Block); msg == "" {
				plain = k
			}
		}
	}
	if len(enc) == 0 {
		if pass != "" && len(problems) == 0 && len(blocks) > 0 {
			z.fail(z.f.KeyPassphrase, "is given but the key in %s is not encrypted: leave it empty", field)
		}
		return plain, false
	}
	if len(enc) > 1 || len(blocks) > 1+countType(blocks, "EC PARAMETERS") || len(problems) > 0 {
		return nil, false // several keys or broken PEM: Inspect says what is wrong
	}
	b := enc[0]
	if b.Type == "ENCRYPTED PRIVATE KEY" {
		return z.decryptPKCS8(b.Bytes, pass, field), true
	}
	if pass == "" {
		z.fail(z.f.KeyPassphrase, "the key in %s is encrypted: give its passphrase in %s", field, z.f.KeyPassphrase)
		return nil, true
	}
	// Legacy OpenSSL encryption (Proc-Type: 4,ENCRYPTED and DEK-Info): one MD5 round of key
	// derivation, so no work bound is needed. It is insecure as storage, which is why the
	// key is stored decrypted under the envelope instead.
	der, err := x509.DecryptPEMBlock(b.Block, []byte(pass.Reveal())) //lint:ignore SA1019 reading legacy encrypted keys is the point; nothing is encrypted this way
	if err != nil {
		if errors.Is(err, x509.IncorrectPasswordError) {
			z.fail(z.f.KeyPassphrase, "does not decrypt the key in %s (wrong passphrase?)", field)
		} else {
			z.fail(field, "the legacy encrypted key in PEM block %d cannot be decrypted: %s", b.n, errText(err))
		}
		return nil, true
	}
	k, msg := parseKeyDER(der)
	if msg != "" {
		if strings.Contains(msg, "unsupported algorithm") {
			z.fail(field, "the decrypted key %s", msg)
		} else {
			z.fail(z.f.KeyPassphrase, "does not decrypt the key in %s (wrong passphrase?)", field)
		}
		return nil, true
	}
	return k, true
}

func countType(blocks []numberedBlock, t string) int {
	n := 0
	for _, b := range blocks {
		if b.Type == t {
			n++
		}
	}
	return n
}

// cleanPEMCerts returns the certificates of data when it is nothing but well-formed
// CERTIFICATE blocks, and nil otherwise (Inspect then reports the problems).
func cleanPEMCerts(data []byte) []*x509.Certificate {
	if len(data) > MaxSize {
		return nil
	}
	blocks, problems := scanPEM(data)
	if len(problems) > 0 || len(blocks) == 0 {
		return nil
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for _, b := range blocks {
		if b.Type != "CERTIFICATE" {
			return nil
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil
		}
		certs = append(certs, c)
	}
	return certs
}

// looksLikePKCS12 reports whether der is shaped like a PFX.
func looksLikePKCS12(der []byte) bool {
	var pfx pfxPDU
	return unmarshalAll(der, &pfx) == nil && pfx.Version == 3
}

// DetectFile sorts the bytes of a material file into the field of Encoded they belong in:
// PEM text, a PKCS#12 file, or DER.
func DetectFile(data []byte) (pemText, pkcs12File bool) {
	if bytes.Contains(data, beginMarker) {
		return true, false
	}
	return false, looksLikePKCS12(data)
}
