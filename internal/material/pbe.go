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
// Windows: 2,000 to 10,000 iterations). What a derivation within them may still cost is
// the business of the budget it runs under (KDF).
const (
	// MaxKDFIterations bounds PBKDF2 and PKCS#12 key derivation iteration counts.
	MaxKDFIterations = 1_000_000
	// MaxScryptMemory bounds what scrypt allocates in all: its table of 128·N·r bytes,
	// its blocks of 128·r·p and its scratch of 256·r, 128·r·(N+p+2) together. It is
	// OpenSSL's default limit on the same sum, so what OpenSSL writes by default passes.
	MaxScryptMemory = 32 << 20
	// MaxScryptR bounds scrypt's block size r; tools write 8.
	MaxScryptR = 32
	// MaxScryptParallel bounds scrypt's p, which multiplies its time.
	MaxScryptParallel = 16
	// MinScryptN is the smallest cost N accepted: below it scrypt protects nothing, and
	// no tool writes it; a tiny N is how a huge r or p hides behind a small table.
	MinScryptN = 1 << 10
	// maxSaltLen bounds a KDF salt; real ones are 8 to 32 bytes.
	maxSaltLen = 1024
	// maxKeyLength bounds a key length a KDF's parameters state: the longest key or MAC
	// key any supported algorithm takes is 64 bytes.
	maxKeyLength = 64
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

// kdfSpec is a checked key derivation, ready to run.
type kdfSpec struct {
	salt       []byte
	iterations int              // PBKDF2
	prf        func() hash.Hash // PBKDF2
	n, r, p    int              // scrypt
	keyLength  int              // 0: the cipher's
	scrypt     bool
}

// memory is what deriving a key costs in memory, as the budget counts it: scrypt
// allocates 128·r·(N+p+2) bytes and its blocks pass through PBKDF2 once more (128·r·p);
// PBKDF2 only hash states.
func (k *kdfSpec) memory() int64 {
	if !k.scrypt {
		return derivationSlack
	}
	return 128*int64(k.r)*(int64(k.n)+2*int64(k.p)+2) + derivationSlack
}

// derive derives a key of keyLen bytes from pass through d.
func (k *kdfSpec) derive(d *deriver, pass []byte, keyLen int) ([]byte, error) {
	if k.keyLength != 0 && k.keyLength != keyLen {
		return nil, pbeErr(errMalformedPBE, "the key length %d does not fit the cipher (%d)", k.keyLength, keyLen)
	}
	var key []byte
	err := d.run(1, k.memory(), func() error {
		var err error
		if k.scrypt {
			key, err = scrypt.Key(pass, k.salt, k.n, k.r, k.p, keyLen)
		} else {
			key, err = pbkdf2.Key(k.prf, string(pass), k.salt, k.iterations, keyLen)
		}
		return err
	})
	return key, err
}

// kdfParams reads and bounds the key derivation function of PBES2 (or PBMAC1).
func kdfParams(alg pkix.AlgorithmIdentifier) (*kdfSpec, error) {
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
		if err := boundedKeyLength(p.KeyLength); err != nil {
			return nil, err
		}
		prf, err := prfOf(p.PRF.Algorithm)
		if err != nil {
			return nil, err
		}
		return &kdfSpec{salt: p.Salt.Bytes, iterations: it, prf: prf, keyLength: p.KeyLength}, nil
	case alg.Algorithm.Equal(oidScrypt):
		var p scryptParams
		if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
			return nil, pbeErr(errMalformedPBE, "the scrypt parameters do not parse")
		}
		if len(p.Salt) > maxSaltLen {
			return nil, pbeErr(errOverLimit, "the salt is %d bytes, over the limit of %d", len(p.Salt), maxSaltLen)
		}
		if err := boundedKeyLength(p.KeyLength); err != nil {
			return nil, err
		}
		n, r, par, err := boundedScrypt(p.N, p.R, p.P)
		if err != nil {
			return nil, err
		}
		return &kdfSpec{salt: p.Salt, n: n, r: r, p: par, keyLength: p.KeyLength, scrypt: true}, nil
	}
	return nil, pbeErr(errUnsupported, "key derivation %s is not supported (PBKDF2 or scrypt are)", alg.Algorithm)
}

// boundedScrypt checks scrypt's N, r and p read from an input: each within its own bound,
// N a power of two, and the whole allocation within MaxScryptMemory. Every product is
// taken only after its factors are bounded, so none overflows.
func boundedScrypt(bn, br, bp *big.Int) (n, r, p int, err error) {
	for _, v := range []*big.Int{bn, br, bp} {
		if v == nil || v.Sign() <= 0 {
			return 0, 0, 0, pbeErr(errMalformedPBE, "a scrypt parameter is not positive")
		}
	}
	switch {
	case br.Cmp(big.NewInt(MaxScryptR)) > 0:
		return 0, 0, 0, pbeErr(errOverLimit, "scrypt block size r=%s is over the limit of %d", boundedNumber(br), MaxScryptR)
	case bp.Cmp(big.NewInt(MaxScryptParallel)) > 0:
		return 0, 0, 0, pbeErr(errOverLimit, "scrypt parallelization p=%s is over the limit of %d", boundedNumber(bp), MaxScryptParallel)
	case bn.Cmp(big.NewInt(MinScryptN)) < 0:
		return 0, 0, 0, pbeErr(errUnsupported, "scrypt cost N=%s is under the minimum of %d", boundedNumber(bn), MinScryptN)
	case bn.Cmp(big.NewInt(MaxScryptMemory/128)) > 0:
		return 0, 0, 0, pbeErr(errOverLimit, "scrypt with N=%s needs more than the %d MiB limit", boundedNumber(bn), MaxScryptMemory>>20)
	}
	n, r, p = int(bn.Int64()), int(br.Int64()), int(bp.Int64())
	if n&(n-1) != 0 {
		return 0, 0, 0, pbeErr(errMalformedPBE, "scrypt N=%d is not a power of two", n)
	}
	if mem := 128 * int64(r) * (int64(n) + int64(p) + 2); mem > MaxScryptMemory {
		return 0, 0, 0, pbeErr(errOverLimit, "scrypt with N=%d, r=%d and p=%d needs %d MiB, more than the %d MiB limit",
			n, r, p, (mem+(1<<20)-1)>>20, MaxScryptMemory>>20)
	}
	return n, r, p, nil
}

// boundedKeyLength checks a key length stated in KDF parameters (0: not stated).
func boundedKeyLength(n int) error {
	if n < 0 || n > maxKeyLength {
		return pbeErr(errMalformedPBE, "the stated key length %d is not one any supported cipher or MAC takes", n)
	}
	return nil
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

// decryptPBES2 decrypts data under PBES2 parameters with pass, deriving its key through d.
// Every parameter is checked before the derivation. A wrong passphrase shows as bad
// padding (or, for the 1 in 256 that pads by chance, as a caller's parse failure).
func decryptPBES2(d *deriver, params []byte, data, pass []byte) ([]byte, error) {
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
	// AES and DES-EDE3 both take the key lengths above; the block size decides the rest,
	// checked before the derivation so no malformed input costs one.
	size := aes.BlockSize
	if p.Enc.Algorithm.Equal(oidDESEDE3CBC) {
		size = des.BlockSize
	}
	if len(iv) != size {
		return nil, pbeErr(errMalformedPBE, "the IV is %d bytes, the cipher needs %d", len(iv), size)
	}
	if len(data) == 0 || len(data)%size != 0 {
		return nil, pbeErr(errMalformedPBE, "the encrypted data is not a whole number of blocks")
	}
	key, err := k.derive(d, pass, keyLen)
	if err != nil {
		return nil, err
	}
	block, err := newBC(key)
	if err != nil {
		return nil, pbeErr(errMalformedPBE, "the cipher does not accept the key")
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
