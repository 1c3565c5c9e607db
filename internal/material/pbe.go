package material

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"math/big"

	"golang.org/x/crypto/scrypt"
)

// Bounds on the work a passphrase-protected input may ask for. The parameters come from the
// input itself, so without them one upload could pin a core for hours (a "PKCS#12 bomb")
// or allocate gigabytes. They are checked before any key derivation runs, and are far
// above what real tools write (OpenSSL: 2,048 PBKDF2 iterations, scrypt N=16384 r=8 p=1;
// Windows: 2,000 to 10,000 iterations).
const (
	// MaxKDFIterations bounds PBKDF2 and PKCS#12 key derivation iteration counts.
	MaxKDFIterations = 1_000_000
	// MaxScryptMemory bounds scrypt's memory (128 * N * r bytes), as OpenSSL's default does.
	MaxScryptMemory = 32 << 20
	// MaxScryptParallel bounds scrypt's p, which multiplies its time.
	MaxScryptParallel = 16
	// maxSaltLen bounds a KDF salt; real ones are 8 to 32 bytes.
	maxSaltLen = 1024
)

// The algorithms of password-based encryption this package recognises.
var (
	oidPBES2        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidHMACSHA1     = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC   = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidPKCS12PBE    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1} // arc of pbeWithSHAAnd...
	oidPKCS5PBES1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5}     // arc of PBES1 (MD5/SHA1 with DES/RC2)
	errWrongPass    = errors.New("wrong passphrase")
	errUnsupported  = errors.New("unsupported algorithm")
	errOverLimit    = errors.New("over the work limit")
	errMalformedPBE = errors.New("malformed encryption parameters")
)

// pbeError is a problem with password-based encryption parameters or their use. Its
// message describes structure and limits, never key material or the passphrase.
type pbeError struct {
	kind error
	msg  string
}

func (e *pbeError) Error() string { return e.msg }
func (e *pbeError) Unwrap() error { return e.kind }

func pbeErr(kind error, format string, args ...any) error {
	return &pbeError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

type pbes2Params struct {
	KDF pkix.AlgorithmIdentifier
	Enc pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt       asn1.RawValue
	Iterations *big.Int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

type scryptParams struct {
	Salt      []byte
	N         *big.Int
	R         *big.Int
	P         *big.Int
	KeyLength int `asn1:"optional"`
}

type pkcs12PBEParams struct {
	Salt       []byte
	Iterations *big.Int
}

// unmarshalAll is asn1.Unmarshal refusing trailing bytes.
func unmarshalAll(b []byte, v any) error {
	rest, err := asn1.Unmarshal(b, v)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return errors.New("trailing data")
	}
	return nil
}

// boundedIterations checks an iteration count read from an input.
func boundedIterations(n *big.Int) (int, error) {
	if n == nil || n.Sign() <= 0 {
		return 0, pbeErr(errMalformedPBE, "the iteration count is not positive")
	}
	if !n.IsInt64() || n.Int64() > MaxKDFIterations {
		return 0, pbeErr(errOverLimit, "the iteration count %s is over the limit of %d", boundedNumber(n), MaxKDFIterations)
	}
	return int(n.Int64()), nil
}

// boundedNumber prints a big number from an input, shortened so it cannot flood a message.
func boundedNumber(n *big.Int) string {
	s := n.String()
	if len(s) > 24 {
		return fmt.Sprintf("of %d digits", len(s))
	}
	return s
}

// CheckPBE checks the parameters of one password-based encryption algorithm (PBES2 with
// PBKDF2 or scrypt, or a PKCS#12 PBE) against the work limits, without deriving anything.
// Unknown algorithms are not this function's business: whoever decrypts refuses them.
func checkPBE(alg pkix.AlgorithmIdentifier) error {
	switch {
	case alg.Algorithm.Equal(oidPBES2):
		var p pbes2Params
		if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
			return pbeErr(errMalformedPBE, "the PBES2 parameters do not parse")
		}
		_, err := kdfParams(p.KDF)
		return err
	case len(alg.Algorithm) == len(oidPKCS12PBE)+1 && alg.Algorithm[:len(oidPKCS12PBE)].Equal(oidPKCS12PBE):
		var p pkcs12PBEParams
		if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
			return pbeErr(errMalformedPBE, "the PKCS#12 PBE parameters do not parse")
		}
		if len(p.Salt) > maxSaltLen {
			return pbeErr(errOverLimit, "the salt is %d bytes, over the limit of %d", len(p.Salt), maxSaltLen)
		}
		_, err := boundedIterations(p.Iterations)
		return err
	}
	return nil
}

// kdf is a checked key derivation, ready to run.
type kdf struct {
	salt       []byte
	iterations int              // PBKDF2
	prf        func() hash.Hash // PBKDF2
	n, r, p    int              // scrypt
	keyLength  int              // 0: the cipher's
	scrypt     bool
}

func (k *kdf) derive(pass []byte, keyLen int) ([]byte, error) {
	if k.keyLength != 0 && k.keyLength != keyLen {
		return nil, pbeErr(errMalformedPBE, "the key length %d does not fit the cipher (%d)", k.keyLength, keyLen)
	}
	if k.scrypt {
		return scrypt.Key(pass, k.salt, k.n, k.r, k.p, keyLen)
	}
	return pbkdf2.Key(k.prf, string(pass), k.salt, k.iterations, keyLen)
}

// kdfParams reads and bounds the key derivation function of PBES2.
func kdfParams(alg pkix.AlgorithmIdentifier) (*kdf, error) {
	switch {
	case alg.Algorithm.Equal(oidPBKDF2):
		var p pbkdf2Params
		if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
			return nil, pbeErr(errMalformedPBE, "the PBKDF2 parameters do not parse")
		}
		if p.Salt.Class != asn1.ClassUniversal || p.Salt.Tag != asn1.TagOctetString {
			return nil, pbeErr(errUnsupported, "only PBKDF2 with a given salt is supported")
		}
		if len(p.Salt.Bytes) > maxSaltLen {
			return nil, pbeErr(errOverLimit, "the salt is %d bytes, over the limit of %d", len(p.Salt.Bytes), maxSaltLen)
		}
		it, err := boundedIterations(p.Iterations)
		if err != nil {
			return nil, err
		}
		prf, err := prfOf(p.PRF.Algorithm)
		if err != nil {
			return nil, err
		}
		return &kdf{salt: p.Salt.Bytes, iterations: it, prf: prf, keyLength: p.KeyLength}, nil
	case alg.Algorithm.Equal(oidScrypt):
		var p scryptParams
		if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
			return nil, pbeErr(errMalformedPBE, "the scrypt parameters do not parse")
		}
		if len(p.Salt) > maxSaltLen {
			return nil, pbeErr(errOverLimit, "the salt is %d bytes, over the limit of %d", len(p.Salt), maxSaltLen)
		}
		for _, v := range []*big.Int{p.N, p.R, p.P} {
			if v == nil || v.Sign() <= 0 {
				return nil, pbeErr(errMalformedPBE, "a scrypt parameter is not positive")
			}
		}
		mem := new(big.Int).Mul(big.NewInt(128), new(big.Int).Mul(p.N, p.R))
		if mem.Cmp(big.NewInt(MaxScryptMemory)) > 0 {
			return nil, pbeErr(errOverLimit, "scrypt with N=%s and r=%s needs more than the %d MiB limit",
				boundedNumber(p.N), boundedNumber(p.R), MaxScryptMemory>>20)
		}
		if p.P.Cmp(big.NewInt(MaxScryptParallel)) > 0 {
			return nil, pbeErr(errOverLimit, "scrypt parallelization %s is over the limit of %d", boundedNumber(p.P), MaxScryptParallel)
		}
		n := int(p.N.Int64())
		if n < 2 || n&(n-1) != 0 {
			return nil, pbeErr(errMalformedPBE, "scrypt N=%d is not a power of two", n)
		}
		return &kdf{salt: p.Salt, n: n, r: int(p.R.Int64()), p: int(p.P.Int64()), keyLength: p.KeyLength, scrypt: true}, nil
	}
	return nil, pbeErr(errUnsupported, "key derivation %s is not supported (PBKDF2 or scrypt are)", alg.Algorithm)
}

func prfOf(oid asn1.ObjectIdentifier) (func() hash.Hash, error) {
	switch {
	case len(oid) == 0, oid.Equal(oidHMACSHA1):
		return sha1.New, nil
	case oid.Equal(oidHMACSHA224):
		return sha256.New224, nil
	case oid.Equal(oidHMACSHA256):
		return sha256.New, nil
	case oid.Equal(oidHMACSHA384):
		return sha512.New384, nil
	case oid.Equal(oidHMACSHA512):
		return sha512.New, nil
	}
	return nil, pbeErr(errUnsupported, "PBKDF2 PRF %s is not supported (HMAC with SHA-1 or SHA-2 is)", oid)
}

// decryptPBES2 decrypts data under PBES2 parameters with pass. A wrong passphrase shows as
// bad padding (or, for the 1 in 256 that pads by chance, as a caller's parse failure).
func decryptPBES2(params []byte, data, pass []byte) ([]byte, error) {
	var p pbes2Params
	if err := unmarshalAll(params, &p); err != nil {
		return nil, pbeErr(errMalformedPBE, "the PBES2 parameters do not parse")
	}
	k, err := kdfParams(p.KDF)
	if err != nil {
		return nil, err
	}
	var (
		keyLen int
		newBC  func([]byte) (cipher.Block, error)
	)
	switch {
	case p.Enc.Algorithm.Equal(oidAES128CBC):
		keyLen, newBC = 16, aes.NewCipher
	case p.Enc.Algorithm.Equal(oidAES192CBC):
		keyLen, newBC = 24, aes.NewCipher
	case p.Enc.Algorithm.Equal(oidAES256CBC):
		keyLen, newBC = 32, aes.NewCipher
	case p.Enc.Algorithm.Equal(oidDESEDE3CBC):
		keyLen, newBC = 24, des.NewTripleDESCipher
	default:
		return nil, pbeErr(errUnsupported, "cipher %s is not supported (AES-CBC or DES-EDE3-CBC are)", p.Enc.Algorithm)
	}
	var iv []byte
	if err := unmarshalAll(p.Enc.Parameters.FullBytes, &iv); err != nil {
		return nil, pbeErr(errMalformedPBE, "the cipher's IV does not parse")
	}
	key, err := k.derive(pass, keyLen)
	if err != nil {
		return nil, err
	}
	block, err := newBC(key)
	if err != nil {
		return nil, pbeErr(errMalformedPBE, "the cipher does not accept the key")
	}
	if len(iv) != block.BlockSize() {
		return nil, pbeErr(errMalformedPBE, "the IV is %d bytes, the cipher needs %d", len(iv), block.BlockSize())
	}
	if len(data) == 0 || len(data)%block.BlockSize() != 0 {
		return nil, pbeErr(errMalformedPBE, "the encrypted data is not a whole number of blocks")
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, data)
	return unpad(out, block.BlockSize())
}

// unpad strips PKCS#7 padding in constant time over the last block, so the check does not
// become a padding oracle.
func unpad(b []byte, size int) ([]byte, error) {
	n := int(b[len(b)-1])
	good := 1
	if n == 0 || n > size {
		good = 0
		n = 1
	}
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(n)
	}
	if !hmac.Equal(b[len(b)-n:], want) {
		good = 0
	}
	if good == 0 {
		return nil, pbeErr(errWrongPass, "the passphrase does not decrypt it")
	}
	return b[:len(b)-n], nil
}
