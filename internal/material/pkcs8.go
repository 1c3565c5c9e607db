package material

import (
	"crypto/x509/pkix"
	"encoding/asn1"
)

// Encrypted PKCS#8 (RFC 5958 EncryptedPrivateKeyInfo, PEM type "ENCRYPTED PRIVATE KEY")
// is decrypted here rather than through a library: the maintained Go packages for it put no
// bound on the iteration count or scrypt cost they are handed, and bounding them needs the
// ASN.1 parse anyway, after which decryption is a few standard-library calls (pbe.go).

type encryptedPrivateKeyInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	Data      []byte
}

// isEncryptedPKCS8 reports whether der is shaped like an EncryptedPrivateKeyInfo: an
// algorithm identifier and an octet string, which no unencrypted key encoding is.
func isEncryptedPKCS8(der []byte) bool {
	var e encryptedPrivateKeyInfo
	return unmarshalAll(der, &e) == nil && len(e.Algorithm.Algorithm) > 0
}

// decryptPKCS8 decrypts an EncryptedPrivateKeyInfo with pass, deriving its key through d,
// and returns the PKCS#8 DER inside. Errors wrap errWrongPass, errUnsupported,
// errOverLimit, errMalformedPBE or ErrNotAdmitted and never contain the passphrase or key
// bytes.
func decryptPKCS8(d *deriver, der, pass []byte) ([]byte, error) {
	var e encryptedPrivateKeyInfo
	if err := unmarshalAll(der, &e); err != nil {
		return nil, pbeErr(errMalformedPBE, "the encrypted key does not parse as PKCS#8")
	}
	alg := e.Algorithm.Algorithm
	switch {
	case alg.Equal(oidPBES2):
		plain, err := decryptPBES2(d, e.Algorithm.Parameters.FullBytes, e.Data, pass)
		if err != nil {
			return nil, err
		}
		// A wrong passphrase that happens to leave valid padding yields garbage, which
		// must not parse as a key either.
		var probe asn1.RawValue
		if unmarshalAll(plain, &probe) != nil {
			return nil, pbeErr(errWrongPass, "the passphrase does not decrypt it")
		}
		return plain, nil
	case len(alg) == len(oidPKCS5PBES1)+1 && alg[:len(oidPKCS5PBES1)].Equal(oidPKCS5PBES1):
		return nil, pbeErr(errUnsupported, "it uses PBES1 (%s), which is not supported: re-encrypt it with openssl pkcs8 -topk8 -v2 aes-256-cbc", alg)
	case len(alg) == len(oidPKCS12PBE)+1 && alg[:len(oidPKCS12PBE)].Equal(oidPKCS12PBE):
		return nil, pbeErr(errUnsupported, "it uses a PKCS#12 PBE (%s), which is not supported here: re-encrypt it with openssl pkcs8 -topk8 -v2 aes-256-cbc", alg)
	}
	return nil, pbeErr(errUnsupported, "encryption algorithm %s is not supported (PBES2 is)", alg)
}
