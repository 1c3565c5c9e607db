package material

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"software.sslmate.com/src/go-pkcs12"
)

// PKCS#12 / PFX files are decoded by software.sslmate.com/src/go-pkcs12, which handles the
// legacy RC2 and 3DES encryption older tools write as well as PBES2 with AES. The library
// derives keys with whatever iteration counts the file names, so scanPKCS12 reads the
// structure first and refuses, before any key derivation, files whose parameters are over
// the work limits of pbe.go: the MAC, every encrypted content, and every shrouded key bag
// it can see. Contents encrypted with PBES2 are decrypted once here to see their bags too;
// contents under the legacy PKCS#12 PBEs (RC2, 3DES) are decrypted by the library only, so
// the file is handed over with its key bag first (pkcs12order.go) and no key bag hidden in
// them is ever derived.

var (
	oidDataContent      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedContent = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidKeyBag           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidShroudedKeyBag   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidPBMAC1           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
)

type pfxPDU struct {
	Version  int
	AuthSafe p12ContentInfo
	MacData  p12MacData `asn1:"optional"`
}

type p12ContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

type p12MacData struct {
	Mac        p12DigestInfo
	MacSalt    []byte
	Iterations asn1.RawValue `asn1:"optional"`
}

type p12DigestInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	Digest    []byte
}

type p12EncryptedData struct {
	Version              int
	EncryptedContentInfo p12EncryptedContentInfo
}

type p12EncryptedContentInfo struct {
	ContentType                asn1.ObjectIdentifier
	ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedContent           []byte `asn1:"tag:0,optional"`
}

type p12SafeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue `asn1:"tag:0,explicit"`
	Attributes asn1.RawValue `asn1:"optional"`
}

type pbmac1Params struct {
	KDF pkix.AlgorithmIdentifier
	MAC pkix.AlgorithmIdentifier
}

// p12Error is a problem with a PKCS#12 file; onPass means it is about the passphrase.
type p12Error struct {
	msg    string
	onPass bool
}

func (e *p12Error) Error() string { return e.msg }

func p12Fail(format string, args ...any) error { return &p12Error{msg: fmt.Sprintf(format, args...)} }

// scanPKCS12 checks the structure and work parameters of a PFX before the library sees it.
// It returns the number of key bags it saw and the file to hand to the library: der itself,
// or der with its unencrypted contents moved first (pkcs12order.go).
func scanPKCS12(der []byte, pass string) (int, []byte, error) {
	var pfx pfxPDU
	if err := unmarshalAll(der, &pfx); err != nil {
		return 0, nil, p12Fail("is not a DER PKCS#12 (PFX) file: %s", errText(err))
	}
	if pfx.Version != 3 {
		return 0, nil, p12Fail("is a PKCS#12 of version %d; only version 3 is supported", pfx.Version)
	}
	if !pfx.AuthSafe.ContentType.Equal(oidDataContent) {
		return 0, nil, p12Fail("uses public-key integrity protection, which is not supported: export it with a passphrase")
	}
	macIter := 0
	if len(pfx.MacData.Mac.Algorithm.Algorithm) > 0 {
		n, err := checkMAC(pfx.MacData)
		if err != nil {
			return 0, nil, err
		}
		macIter = n
	}
	var content []byte
	if err := unmarshalAll(pfx.AuthSafe.Content.Bytes, &content); err != nil {
		return 0, nil, p12Fail("is not a valid PKCS#12: the authenticated safe does not parse")
	}
	var safe []p12ContentInfo
	if err := unmarshalAll(content, &safe); err != nil {
		return 0, nil, p12Fail("is not a valid PKCS#12: the authenticated safe does not parse")
	}
	if len(safe) == 0 || len(safe) > 2 {
		return 0, nil, p12Fail("holds %d safe contents; one or two (certificates and key) are supported", len(safe))
	}
	keys := 0
	legacy := -1         // the first content under a legacy PKCS#12 PBE
	hiddenFirst := false // a legacy content comes before an unencrypted one
	for i, ci := range safe {
		var bags []byte
		switch {
		case ci.ContentType.Equal(oidDataContent):
			if err := unmarshalAll(ci.Content.Bytes, &bags); err != nil {
				return 0, nil, p12Fail("is not a valid PKCS#12: a safe content does not parse")
			}
			if legacy >= 0 {
				hiddenFirst = true
			}
		case ci.ContentType.Equal(oidEncryptedContent):
			var ed p12EncryptedData
			if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
				return 0, nil, p12Fail("is not a valid PKCS#12: an encrypted content does not parse")
			}
			alg := ed.EncryptedContentInfo.ContentEncryptionAlgorithm
			if err := checkPBE(alg); err != nil {
				return 0, nil, p12PBEError("its encrypted certificates", err)
			}
			if !alg.Algorithm.Equal(oidPBES2) {
				if legacy < 0 {
					legacy = i
				}
				continue // legacy PKCS#12 PBE: the library decrypts it
			}
			plain, err := decryptPBES2(alg.Parameters.FullBytes, ed.EncryptedContentInfo.EncryptedContent, []byte(pass))
			if err != nil {
				return 0, nil, p12PBEError("its encrypted certificates", err)
			}
			bags = plain
		default:
			return 0, nil, p12Fail("holds a safe content of type %s; only data and encrypted data are supported", ci.ContentType)
		}
		n, err := scanBags(bags)
		if err != nil {
			return 0, nil, err
		}
		keys += n
	}
	switch {
	case legacy < 0:
		return keys, der, nil
	case keys == 0:
		// A key inside a legacy-encrypted content would be derived with parameters nobody
		// checked; tools never put it there.
		return 0, nil, p12Fail("holds no private key outside its encrypted certificates: a pair needs the certificate and its key (openssl pkcs12 -export -inkey key.pem -in cert.pem)")
	case !hiddenFirst:
		return keys, der, nil
	}
	out, err := unencryptedFirst(pfx, safe, pass, macIter)
	return keys, out, err
}

func checkMAC(m p12MacData) (int, error) {
	if m.Mac.Algorithm.Algorithm.Equal(oidPBMAC1) {
		var p pbmac1Params
		if err := unmarshalAll(m.Mac.Algorithm.Parameters.FullBytes, &p); err != nil {
			return 0, p12Fail("is not a valid PKCS#12: the PBMAC1 parameters do not parse")
		}
		if _, err := kdfParams(p.KDF); err != nil {
			return 0, p12PBEError("its integrity check", err)
		}
		return 0, nil
	}
	if len(m.MacSalt) > maxSaltLen {
		return 0, p12Fail("has a MAC salt of %d bytes, over the limit of %d", len(m.MacSalt), maxSaltLen)
	}
	if len(m.Iterations.FullBytes) == 0 {
		return 1, nil // DEFAULT 1
	}
	var it *big.Int
	if err := unmarshalAll(m.Iterations.FullBytes, &it); err != nil {
		return 0, p12Fail("is not a valid PKCS#12: the MAC iteration count does not parse")
	}
	n, err := boundedIterations(it)
	if err != nil {
		return 0, p12PBEError("its integrity check", err)
	}
	return n, nil
}

// scanBags checks the shrouded key bags of one safe content and counts the key bags.
func scanBags(der []byte) (int, error) {
	var bags []p12SafeBag
	if err := unmarshalAll(der, &bags); err != nil {
		return 0, p12Fail("is not a valid PKCS#12: a safe content's bags do not parse")
	}
	keys := 0
	for _, b := range bags {
		switch {
		case b.ID.Equal(oidKeyBag):
			keys++
		case b.ID.Equal(oidShroudedKeyBag):
			keys++
			var e encryptedPrivateKeyInfo
			if err := unmarshalAll(b.Value.Bytes, &e); err != nil {
				return 0, p12Fail("is not a valid PKCS#12: a key bag does not parse")
			}
			if err := checkPBE(e.Algorithm); err != nil {
				return 0, p12PBEError("its private key", err)
			}
		}
	}
	return keys, nil
}

func p12PBEError(what string, err error) error {
	if errors.Is(err, errWrongPass) {
		return &p12Error{msg: "does not decrypt " + what + " with this passphrase (wrong passphrase?)", onPass: true}
	}
	return p12Fail("%s: %s", what, err.Error())
}

// decodePKCS12 decodes a PFX into its certificates (in file order) and its one private key.
func decodePKCS12(der []byte, pass string) ([]*x509.Certificate, crypto.Signer, error) {
	keys, der, err := scanPKCS12(der, pass)
	if err != nil {
		return nil, nil, err
	}
	if keys > 1 {
		return nil, nil, p12Fail("holds %d private keys: exactly one is allowed", keys)
	}
	key, leaf, chain, err := pkcs12.DecodeChain(der, pass)
	if err != nil {
		return nil, nil, p12LibError(err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, p12Fail("holds a private key of an unsupported algorithm: RSA, ECDSA or Ed25519 keys are supported")
	}
	if _, msg := checkKeyType(signer); msg != "" {
		return nil, nil, p12Fail("holds a private key that %s", msg)
	}
	return append([]*x509.Certificate{leaf}, chain...), signer, nil
}

// p12LibError turns a go-pkcs12 error into a message for an operator. The library's
// messages describe structure; errText bounds them anyway.
func p12LibError(err error) error {
	var ni pkcs12.NotImplementedError
	s := err.Error()
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword), errors.Is(err, pkcs12.ErrDecryption):
		return &p12Error{msg: "does not decrypt with this passphrase (wrong passphrase?)", onPass: true}
	case strings.Contains(s, "no MAC in data"):
		return &p12Error{msg: "is not protected by a passphrase: leave passphrase empty", onPass: true}
	case strings.Contains(s, "private key missing"):
		return p12Fail("holds no private key: a pair needs the certificate and its key (openssl pkcs12 -export -inkey key.pem -in cert.pem)")
	case strings.Contains(s, "certificate missing"):
		return p12Fail("holds no certificate")
	case strings.Contains(s, "exactly one key bag"):
		return p12Fail("holds several private keys: exactly one is allowed")
	case strings.Contains(s, "cannot be encoded in UCS-2"):
		return &p12Error{msg: "contains characters a PKCS#12 passphrase cannot hold", onPass: true}
	case errors.As(err, &ni):
		return p12Fail("uses something that is not supported: %s", errText(err))
	}
	return p12Fail("does not decode as PKCS#12: %s", errText(err))
}
