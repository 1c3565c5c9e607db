package material

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"hash"
	"unicode/utf16"
)

// The MAC of a PFX: classic (RFC 7292, a key from the PKCS#12 KDF) or PBMAC1 (RFC 9579, a
// key from PBKDF2), verified here once, through the caller's deriver.

var (
	oidMACSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidMACSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidMACSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

// bmpPassword is a passphrase as PKCS#12's KDF takes it: UTF-16 big endian with a
// terminating zero. ok is false for characters UCS-2 cannot hold.
func bmpPassword(s string) ([]byte, bool) {
	out := make([]byte, 0, 2*len(s)+2)
	for _, r := range s {
		if r > 0xffff || utf16.IsSurrogate(r) {
			return nil, false
		}
		out = append(out, byte(r>>8), byte(r))
	}
	return append(out, 0, 0), true
}

// pkcs12KDF is the key derivation of RFC 7292 appendix B.2 for hash h of output u and block
// v bytes, with purpose id (3 for MAC keys).
func pkcs12KDF(h func() hash.Hash, u, v int, salt, pass []byte, iterations int, id byte, size int) []byte {
	fill := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		n := v * ((len(b) + v - 1) / v)
		out := make([]byte, n)
		for i := range out {
			out[i] = b[i%len(b)]
		}
		return out
	}
	D := make([]byte, v)
	for i := range D {
		D[i] = id
	}
	I := append(fill(salt), fill(pass)...)
	var out []byte
	for len(out) < size {
		hh := h()
		hh.Write(D)
		hh.Write(I)
		A := hh.Sum(nil)
		for j := 1; j < iterations; j++ {
			hh.Reset()
			hh.Write(A)
			A = hh.Sum(A[:0])
		}
		out = append(out, A...)
		if len(out) >= size {
			break
		}
		B := make([]byte, v)
		for i := range B {
			B[i] = A[i%len(A)]
		}
		for j := 0; j < len(I); j += v {
			carry := 1
			for k := v - 1; k >= 0; k-- {
				sum := int(I[j+k]) + int(B[k]) + carry
				I[j+k] = byte(sum)
				carry = sum >> 8
			}
		}
	}
	return out[:size]
}

// macHash is a classic MAC's digest: the hash, its output (u) and block (v) sizes.
type macHash struct {
	h    func() hash.Hash
	u, v int
}

// macDigest is the digest of a classic MAC; ok is false for one this package does not know.
func macDigest(alg asn1.ObjectIdentifier) (macHash, bool) {
	switch {
	case alg.Equal(oidMACSHA1):
		return macHash{sha1.New, 20, 64}, true
	case alg.Equal(oidMACSHA256):
		return macHash{sha256.New, 32, 64}, true
	case alg.Equal(oidMACSHA512):
		return macHash{sha512.New, 64, 128}, true
	}
	return macHash{}, false
}

// classicMAC is the classic MAC of message under a key derived with iterations.
func classicMAC(m macHash, salt, pass []byte, iterations int, message []byte) []byte {
	mac := hmac.New(m.h, pkcs12KDF(m.h, m.u, m.v, salt, pass, iterations, 3, m.u))
	mac.Write(message)
	return mac.Sum(nil)
}

// pbmac1Of reads and bounds PBMAC1 parameters: PBKDF2 with a stated key length of 20 to
// 64 bytes (RFC 9579; a shorter key lets a MAC be forged), and an HMAC.
func pbmac1Of(alg pkix.AlgorithmIdentifier) (*kdfSpec, func() hash.Hash, error) {
	var p pbmac1Params
	if err := unmarshalAll(alg.Parameters.FullBytes, &p); err != nil {
		return nil, nil, p12Fail("is not a valid PKCS#12: the PBMAC1 parameters do not parse")
	}
	if !p.KDF.Algorithm.Equal(oidPBKDF2) {
		return nil, nil, p12Fail("its integrity check derives its key with %s; PBMAC1 is supported with PBKDF2", p.KDF.Algorithm)
	}
	spec, err := kdfParams(p.KDF)
	if err != nil {
		return nil, nil, p12PBEError("its integrity check", err)
	}
	if spec.keyLength < 20 {
		return nil, nil, p12Fail("its integrity check (PBMAC1) states no key length of at least 20 bytes")
	}
	if len(p.MAC.Algorithm) == 0 {
		return nil, nil, p12Fail("its integrity check (PBMAC1) names no MAC")
	}
	h, err := prfOf(p.MAC.Algorithm)
	if err != nil {
		return nil, nil, p12PBEError("its integrity check", err)
	}
	return spec, h, nil
}

type pbmac1Params struct {
	KDF pkix.AlgorithmIdentifier
	MAC pkix.AlgorithmIdentifier
}

// verifyMAC checks the file's MAC under pass, deriving its key through d, and returns the
// passphrase bytes it took (for the MAC of the rewritten file): the BMP string bmp, or,
// for an empty passphrase that tools wrote as no bytes at all, nil. A file without a MAC
// (and, as scanPKCS12 made sure, an empty passphrase) takes bmp.
func (f *pfxFile) verifyMAC(d *deriver, pass string, bmp []byte) ([]byte, error) {
	m := f.pdu.MacData
	switch {
	case len(m.Mac.Algorithm.Algorithm) == 0:
		return bmp, nil
	case m.Mac.Algorithm.Algorithm.Equal(oidPBMAC1):
		spec, h, err := pbmac1Of(m.Mac.Algorithm)
		if err != nil {
			return nil, err
		}
		// RFC 9579's erratum 7974: PBMAC1 takes the passphrase as UTF-8, not as BMP.
		key, err := spec.derive(d, []byte(pass), spec.keyLength)
		if err != nil {
			return nil, p12PBEError("its integrity check", err)
		}
		mac := hmac.New(h, key)
		mac.Write(f.authSafe)
		if !hmac.Equal(mac.Sum(nil), m.Mac.Digest) {
			return nil, errP12WrongPass
		}
		return bmp, nil
	}
	digest, _ := macDigest(m.Mac.Algorithm.Algorithm) // known: scanPKCS12 checked it
	candidates := [][]byte{bmp}
	if pass == "" {
		candidates = append(candidates, nil)
	}
	for _, c := range candidates {
		var got []byte
		err := d.run(1, derivationSlack, func() error {
			got = classicMAC(digest, m.MacSalt, c, f.macIterations, f.authSafe)
			return nil
		})
		if err != nil {
			return nil, p12PBEError("its integrity check", err)
		}
		if hmac.Equal(got, m.Mac.Digest) {
			return c, nil
		}
	}
	return nil, errP12WrongPass
}

// rewriteMACSalt salts the MAC of a rewritten file; any value serves, the file never
// leaves the process.
var rewriteMACSalt = []byte("loopze-r")

// oneIterationMAC is a classic SHA-256 MAC of message under pass with a single
// iteration: the MAC of a rewritten file, whose own MAC was verified already, so the
// library's check of it costs nothing.
func oneIterationMAC(message, pass []byte) p12MacData {
	digest, _ := macDigest(oidMACSHA256)
	return p12MacData{
		Mac: p12DigestInfo{
			Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidMACSHA256, Parameters: asn1.NullRawValue},
			Digest:    classicMAC(digest, rewriteMACSalt, pass, 1, message),
		},
		MacSalt: rewriteMACSalt,
	}
}
