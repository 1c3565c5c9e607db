package material

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"hash"
	"unicode/utf16"
)

// A key bag may sit inside a content encrypted with a legacy PKCS#12 PBE (RC2, 3DES), where
// scanPKCS12 cannot see its iteration count. go-pkcs12 derives the key of the first key bag
// it meets and refuses a second one before deriving anything, in the order of the file's
// contents. So when the file's key bag is in an unencrypted content (where every tool puts
// it, and where its parameters were checked), moving that content first means no hidden
// key bag is ever derived: the library stops at it as a second key. Moving contents breaks
// the file's MAC, which is therefore checked here and computed again, with the file's own
// (bounded) parameters.

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

// macOf computes a PFX's classic MAC (not PBMAC1) over message; ok is false for a digest
// this package does not know.
func macOf(m p12MacData, iterations int, message, pass []byte) ([]byte, bool) {
	var (
		h    func() hash.Hash
		u, v int
	)
	switch alg := m.Mac.Algorithm.Algorithm; {
	case alg.Equal(oidMACSHA1):
		h, u, v = sha1.New, 20, 64
	case alg.Equal(oidMACSHA256):
		h, u, v = sha256.New, 32, 64
	case alg.Equal(oidMACSHA512):
		h, u, v = sha512.New, 64, 128
	default:
		return nil, false
	}
	key := pkcs12KDF(h, u, v, m.MacSalt, pass, iterations, 3, u)
	mac := hmac.New(h, key)
	mac.Write(message)
	return mac.Sum(nil), true
}

// unencryptedFirst rewrites a PFX so its unencrypted contents come before its encrypted
// ones, checking the MAC under pass first and computing it again after. It is called only
// when an unencrypted content holds a key bag and a legacy-encrypted content precedes it.
func unencryptedFirst(pfx pfxPDU, safe []p12ContentInfo, pass string, macIterations int) ([]byte, error) {
	ordered := make([]p12ContentInfo, 0, len(safe))
	for _, ci := range safe {
		if ci.ContentType.Equal(oidDataContent) {
			ordered = append(ordered, ci)
		}
	}
	for _, ci := range safe {
		if !ci.ContentType.Equal(oidDataContent) {
			ordered = append(ordered, ci)
		}
	}
	inner, err := asn1.Marshal(ordered)
	if err != nil {
		return nil, p12Fail("cannot be re-read: %s", errText(err))
	}
	if len(pfx.MacData.Mac.Algorithm.Algorithm) > 0 {
		if pfx.MacData.Mac.Algorithm.Algorithm.Equal(oidPBMAC1) {
			return nil, p12Fail("combines a PBMAC1 integrity check with legacy encryption, which is not supported: export it again with openssl pkcs12 -export")
		}
		var oldContent []byte
		if err := unmarshalAll(pfx.AuthSafe.Content.Bytes, &oldContent); err != nil {
			return nil, p12Fail("is not a valid PKCS#12: the authenticated safe does not parse")
		}
		bmp, ok := bmpPassword(pass)
		if !ok {
			return nil, &p12Error{msg: "contains characters a PKCS#12 passphrase cannot hold", onPass: true}
		}
		// An empty passphrase is either the empty BMP string or no bytes at all, as
		// go-pkcs12 accepts too.
		candidates := [][]byte{bmp}
		if pass == "" {
			candidates = append(candidates, nil)
		}
		var used []byte
		matched := false
		for _, c := range candidates {
			got, ok := macOf(pfx.MacData, macIterations, oldContent, c)
			if !ok {
				return nil, p12Fail("uses a MAC digest that is not supported (SHA-1, SHA-256 or SHA-512 are)")
			}
			if hmac.Equal(got, pfx.MacData.Mac.Digest) {
				used, matched = c, true
				break
			}
		}
		if !matched {
			return nil, &p12Error{msg: "does not decrypt with this passphrase (wrong passphrase?)", onPass: true}
		}
		pfx.MacData.Mac.Digest, _ = macOf(pfx.MacData, macIterations, inner, used)
	}
	oct, err := asn1.Marshal(inner)
	if err != nil {
		return nil, p12Fail("cannot be re-read: %s", errText(err))
	}
	pfx.AuthSafe.Content = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: oct}
	out, err := asn1.Marshal(pfx)
	if err != nil {
		return nil, p12Fail("cannot be re-read: %s", errText(err))
	}
	return out, nil
}
