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

// PKCS#12 / PFX files are read here first and decoded by software.sslmate.com/src/go-pkcs12
// last, so that every key of the file is derived once, by whoever can, through the
// caller's deriver:
//
//   - scanPKCS12 reads the structure and checks every work parameter it can see (the MAC,
//     each encrypted content, each shrouded key bag of an unencrypted content) before
//     anything is derived;
//   - the MAC is verified here, and contents and key bags under PBES2 are decrypted here
//     (their bags checked in turn before their keys are derived);
//   - the library is handed the file rewritten: what was decrypted arrives as plain data
//     and plain key bags, unencrypted contents first, and the MAC replaced. When nothing
//     is left under a legacy PKCS#12 PBE (RC2, 3DES) the file has no MAC and the library
//     is given the empty passphrase: it derives nothing. Otherwise the MAC is one of a
//     single iteration under the same passphrase (the file's own was verified already),
//     and the library decrypts the legacy contents and key bag, once each, under the
//     deriver's admission. Because the file's one visible key bag comes first, a key bag
//     hidden in a legacy content is refused by the library as a second key before its
//     key is derived.
//
// Decoding every bag here would mean carrying RC2; this way the library keeps the legacy
// ciphers and the parsing of certificates and keys, and no derivation escapes the count.

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

// p12Error is a problem with a PKCS#12 file; onPass means it is about the passphrase.
type p12Error struct {
	msg    string
	onPass bool
}

func (e *p12Error) Error() string { return e.msg }

func p12Fail(format string, args ...any) error { return &p12Error{msg: fmt.Sprintf(format, args...)} }

// errP12WrongPass is the answer to a passphrase that does not open the file.
var errP12WrongPass = &p12Error{msg: "does not decrypt with this passphrase (wrong passphrase?)", onPass: true}

// pfxFile is a PFX read and checked by scanPKCS12, whose contents decodePKCS12 opens.
type pfxFile struct {
	pdu pfxPDU
	// authSafe is the octets the MAC is computed over.
	authSafe []byte
	// macIterations is the classic MAC's iteration count (checked).
	macIterations int
	contents      []*p12Content
}

// p12Content is one content of the authenticated safe.
type p12Content struct {
	// encrypted: its algorithm and ciphertext; else the bags are visible from the start.
	encrypted bool
	alg       pkix.AlgorithmIdentifier
	sealed    []byte
	// legacy: under a legacy PKCS#12 PBE, which only the library decrypts.
	legacy bool
	// bags are the content's bags once visible (always, for an unencrypted content).
	bags []p12SafeBag
}

// The legacy PKCS#12 PBEs the library decrypts: pbeWithSHAAnd3-KeyTripleDES-CBC,
// pbeWithSHAAnd128BitRC2-CBC and pbeWithSHAAnd40BitRC2-CBC.
var legacyPBEs = []asn1.ObjectIdentifier{
	append(append(asn1.ObjectIdentifier{}, oidPKCS12PBE...), 3),
	append(append(asn1.ObjectIdentifier{}, oidPKCS12PBE...), 5),
	append(append(asn1.ObjectIdentifier{}, oidPKCS12PBE...), 6),
}

func isLegacyPBE(oid asn1.ObjectIdentifier) bool {
	for _, l := range legacyPBEs {
		if oid.Equal(l) {
			return true
		}
	}
	return false
}

// scanPKCS12 reads the structure of a PFX and checks, without deriving anything, every
// work parameter it can see and that pass may be tried at all.
func scanPKCS12(der []byte, pass string) (*pfxFile, error) {
	f := &pfxFile{}
	if err := unmarshalAll(der, &f.pdu); err != nil {
		return nil, p12Fail("is not a DER PKCS#12 (PFX) file: %s", errText(err))
	}
	if f.pdu.Version != 3 {
		return nil, p12Fail("is a PKCS#12 of version %d; only version 3 is supported", f.pdu.Version)
	}
	if !f.pdu.AuthSafe.ContentType.Equal(oidDataContent) {
		return nil, p12Fail("uses public-key integrity protection, which is not supported: export it with a passphrase")
	}
	if len(f.pdu.MacData.Mac.Algorithm.Algorithm) > 0 {
		n, err := checkMAC(f.pdu.MacData)
		if err != nil {
			return nil, err
		}
		f.macIterations = n
	} else if pass != "" {
		return nil, &p12Error{msg: "is not protected by a passphrase: leave passphrase empty", onPass: true}
	}
	if err := unmarshalAll(f.pdu.AuthSafe.Content.Bytes, &f.authSafe); err != nil {
		return nil, p12Fail("is not a valid PKCS#12: the authenticated safe does not parse")
	}
	var safe []p12ContentInfo
	if err := unmarshalAll(f.authSafe, &safe); err != nil {
		return nil, p12Fail("is not a valid PKCS#12: the authenticated safe does not parse")
	}
	if len(safe) == 0 || len(safe) > 2 {
		return nil, p12Fail("holds %d safe contents; one or two (certificates and key) are supported", len(safe))
	}
	for _, ci := range safe {
		c := &p12Content{}
		switch {
		case ci.ContentType.Equal(oidDataContent):
			var bags []byte
			if err := unmarshalAll(ci.Content.Bytes, &bags); err != nil {
				return nil, p12Fail("is not a valid PKCS#12: a safe content does not parse")
			}
			var err error
			if c.bags, err = scanBags(bags); err != nil {
				return nil, err
			}
		case ci.ContentType.Equal(oidEncryptedContent):
			var ed p12EncryptedData
			if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
				return nil, p12Fail("is not a valid PKCS#12: an encrypted content does not parse")
			}
			c.encrypted, c.alg, c.sealed = true, ed.EncryptedContentInfo.ContentEncryptionAlgorithm, ed.EncryptedContentInfo.EncryptedContent
			if err := checkPBE(c.alg); err != nil {
				return nil, p12PBEError("its encrypted certificates", err)
			}
			switch {
			case c.alg.Algorithm.Equal(oidPBES2):
			case isLegacyPBE(c.alg.Algorithm):
				c.legacy = true
			default:
				return nil, p12Fail("encrypts its certificates with %s, which is not supported (PBES2, or the PKCS#12 PBEs with 3DES or RC2, are)", c.alg.Algorithm)
			}
		default:
			return nil, p12Fail("holds a safe content of type %s; only data and encrypted data are supported", ci.ContentType)
		}
		f.contents = append(f.contents, c)
	}
	if n := f.visibleKeys(); n > 1 {
		return nil, p12Fail("holds %d private keys: exactly one is allowed", n)
	}
	return f, nil
}

// checkMAC checks the parameters of a PFX's MAC and returns the classic MAC's iteration
// count (0 for PBMAC1).
func checkMAC(m p12MacData) (int, error) {
	if m.Mac.Algorithm.Algorithm.Equal(oidPBMAC1) {
		if _, _, err := pbmac1Of(m.Mac.Algorithm); err != nil {
			return 0, err
		}
		return 0, nil
	}
	if _, ok := macDigest(m.Mac.Algorithm.Algorithm); !ok {
		return 0, p12Fail("uses a MAC digest that is not supported (SHA-1, SHA-256 or SHA-512 are)")
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

// scanBags parses one safe content's bags and checks the parameters of its shrouded key
// bags.
func scanBags(der []byte) ([]p12SafeBag, error) {
	var bags []p12SafeBag
	if err := unmarshalAll(der, &bags); err != nil {
		return nil, p12Fail("is not a valid PKCS#12: a safe content's bags do not parse")
	}
	for _, b := range bags {
		if !b.ID.Equal(oidShroudedKeyBag) {
			continue
		}
		var e encryptedPrivateKeyInfo
		if err := unmarshalAll(b.Value.Bytes, &e); err != nil {
			return nil, p12Fail("is not a valid PKCS#12: a key bag does not parse")
		}
		if err := checkPBE(e.Algorithm); err != nil {
			return nil, p12PBEError("its private key", err)
		}
		if !e.Algorithm.Algorithm.Equal(oidPBES2) && !isLegacyPBE(e.Algorithm.Algorithm) {
			return nil, p12Fail("encrypts its private key with %s, which is not supported (PBES2, or the PKCS#12 PBE with 3DES, are)", e.Algorithm.Algorithm)
		}
	}
	return bags, nil
}

// visibleKeys counts the key bags of the contents whose bags are visible.
func (f *pfxFile) visibleKeys() int {
	n := 0
	for _, c := range f.contents {
		for _, b := range c.bags {
			if b.ID.Equal(oidKeyBag) || b.ID.Equal(oidShroudedKeyBag) {
				n++
			}
		}
	}
	return n
}

func p12PBEError(what string, err error) error {
	switch {
	case errors.Is(err, errWrongPass):
		return &p12Error{msg: "does not decrypt " + what + " with this passphrase (wrong passphrase?)", onPass: true}
	case errors.Is(err, ErrNotAdmitted):
		return err
	}
	return p12Fail("%s: %s", what, err.Error())
}

// decodePKCS12 decodes a PFX into its certificates (in file order) and its one private
// key, deriving every key through d. Errors are a *p12Error, or wrap ErrNotAdmitted.
func decodePKCS12(d *deriver, der []byte, pass string) ([]*x509.Certificate, crypto.Signer, error) {
	f, err := scanPKCS12(der, pass)
	if err != nil {
		return nil, nil, err
	}
	out, libPass, libDerivations, err := f.open(d, pass)
	if err != nil {
		return nil, nil, err
	}
	var (
		key    any
		leaf   *x509.Certificate
		chain  []*x509.Certificate
		libErr error
	)
	decode := func() error {
		key, leaf, chain, libErr = pkcs12.DecodeChain(out, libPass)
		return nil
	}
	if libDerivations == 0 {
		_ = decode()
	} else if err := d.run(libDerivations, derivationSlack, decode); err != nil {
		return nil, nil, p12PBEError("its encrypted certificates", err) // the library never ran
	}
	if libErr != nil {
		return nil, nil, p12LibError(libErr)
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

// open verifies the MAC and decrypts what is under PBES2, deriving through d, and returns
// the file to hand the library, the passphrase to give it and how many keys the library
// will derive (its legacy contents and key bag).
func (f *pfxFile) open(d *deriver, pass string) (out []byte, libPass string, libDerivations int, err error) {
	bmp, ok := bmpPassword(pass)
	if !ok {
		return nil, "", 0, &p12Error{msg: "contains characters a PKCS#12 passphrase cannot hold", onPass: true}
	}
	macPass, err := f.verifyMAC(d, pass, bmp)
	if err != nil {
		return nil, "", 0, err
	}
	for _, c := range f.contents {
		if !c.encrypted || c.legacy {
			continue
		}
		plain, err := decryptPBES2(d, c.alg.Parameters.FullBytes, c.sealed, []byte(pass))
		if err != nil {
			return nil, "", 0, p12PBEError("its encrypted certificates", err)
		}
		if c.bags, err = scanBags(plain); err != nil {
			return nil, "", 0, err
		}
	}
	for _, c := range f.contents {
		if c.legacy {
			libDerivations++
		}
	}
	switch keys := f.visibleKeys(); {
	case keys > 1:
		return nil, "", 0, p12Fail("holds %d private keys: exactly one is allowed", keys)
	case keys == 0 && libDerivations > 0:
		// A key inside a legacy-encrypted content would be derived with parameters nobody
		// checked; tools never put it there.
		return nil, "", 0, p12Fail("holds no private key outside its encrypted certificates: a pair needs the certificate and its key (openssl pkcs12 -export -inkey key.pem -in cert.pem)")
	case keys == 0:
		return nil, "", 0, p12Fail("holds no private key: a pair needs the certificate and its key (openssl pkcs12 -export -inkey key.pem -in cert.pem)")
	}
	legacyKey, err := f.openKeyBag(d, pass)
	if err != nil {
		return nil, "", 0, err
	}
	if legacyKey {
		libDerivations++
	}
	out, libPass, err = f.forLibrary(pass, macPass, libDerivations > 0)
	return out, libPass, libDerivations, err
}

// openKeyBag decrypts the file's one shrouded key bag when it is under PBES2 and puts it
// back as a plain key bag; legacy reports a key bag under a legacy PBE, left to the
// library.
func (f *pfxFile) openKeyBag(d *deriver, pass string) (legacy bool, err error) {
	for _, c := range f.contents {
		for i, b := range c.bags {
			if !b.ID.Equal(oidShroudedKeyBag) {
				continue
			}
			var e encryptedPrivateKeyInfo
			if err := unmarshalAll(b.Value.Bytes, &e); err != nil {
				return false, p12Fail("is not a valid PKCS#12: a key bag does not parse")
			}
			if !e.Algorithm.Algorithm.Equal(oidPBES2) {
				return true, nil
			}
			plain, err := decryptPKCS8(d, b.Value.Bytes, []byte(pass))
			if err != nil {
				return false, p12PBEError("its private key", err)
			}
			c.bags[i] = p12SafeBag{ID: oidKeyBag, Value: explicit0(plain), Attributes: b.Attributes}
		}
	}
	return false, nil
}

// explicit0 wraps der as the [0] EXPLICIT element asn1.RawValue fields hold.
func explicit0(der []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: der}
}

// forLibrary writes the PFX the library decodes, and the passphrase to give it: the
// contents whose bags are visible first, as plain data, then the legacy ones. With
// legacy left, a MAC of one iteration under macPass (the passphrase bytes the file's own
// MAC took), since the library requires one with a passphrase; without, no MAC and the
// empty passphrase, so the library derives nothing.
func (f *pfxFile) forLibrary(pass string, macPass []byte, legacy bool) ([]byte, string, error) {
	ordered := make([]p12ContentInfo, 0, len(f.contents))
	for _, c := range f.contents {
		if c.legacy {
			continue
		}
		bags, err := asn1.Marshal(c.bags)
		if err != nil {
			return nil, "", p12Fail("cannot be re-read: %s", errText(err))
		}
		oct, err := asn1.Marshal(bags)
		if err != nil {
			return nil, "", p12Fail("cannot be re-read: %s", errText(err))
		}
		ordered = append(ordered, p12ContentInfo{ContentType: oidDataContent, Content: explicit0(oct)})
	}
	for _, c := range f.contents {
		if !c.legacy {
			continue
		}
		ed, err := asn1.Marshal(p12EncryptedData{EncryptedContentInfo: p12EncryptedContentInfo{
			ContentType: oidDataContent, ContentEncryptionAlgorithm: c.alg, EncryptedContent: c.sealed}})
		if err != nil {
			return nil, "", p12Fail("cannot be re-read: %s", errText(err))
		}
		ordered = append(ordered, p12ContentInfo{ContentType: oidEncryptedContent, Content: explicit0(ed)})
	}
	inner, err := asn1.Marshal(ordered)
	if err != nil {
		return nil, "", p12Fail("cannot be re-read: %s", errText(err))
	}
	pdu, libPass := f.pdu, ""
	pdu.MacData = p12MacData{}
	if legacy {
		pdu.MacData, libPass = oneIterationMAC(inner, macPass), pass
	}
	oct, err := asn1.Marshal(inner)
	if err != nil {
		return nil, "", p12Fail("cannot be re-read: %s", errText(err))
	}
	pdu.AuthSafe.Content = explicit0(oct)
	out, err := asn1.Marshal(pdu)
	if err != nil {
		return nil, "", p12Fail("cannot be re-read: %s", errText(err))
	}
	return out, libPass, nil
}

// p12LibError turns a go-pkcs12 error into a message for an operator. The library's
// messages describe structure; errText bounds them anyway.
func p12LibError(err error) error {
	var ni pkcs12.NotImplementedError
	s := err.Error()
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword), errors.Is(err, pkcs12.ErrDecryption):
		return errP12WrongPass
	case strings.Contains(s, "private key missing"):
		return p12Fail("holds no private key: a pair needs the certificate and its key (openssl pkcs12 -export -inkey key.pem -in cert.pem)")
	case strings.Contains(s, "certificate missing"):
		return p12Fail("holds no certificate")
	case strings.Contains(s, "exactly one key bag"):
		return p12Fail("holds several private keys: exactly one is allowed")
	case errors.As(err, &ni):
		return p12Fail("uses something that is not supported: %s", errText(err))
	}
	return p12Fail("does not decode as PKCS#12: %s", errText(err))
}
