// Package envelope owns encryption at rest: the master key file in the data directory, the
// ring of master keys (one current, older ones kept for opening during a rotation), and the
// envelope scheme that seals every secret value under its own data key.
//
// A value is sealed with AES-256-GCM under a fresh random data key (DEK); the DEK is wrapped
// with AES-256-GCM under the current master key. Both operations authenticate the format
// version and where the value lives (tenant, owner, field), so a ciphertext copied to another
// row, field or tenant does not open; the wrap also authenticates the master key ID. The
// result is one self-describing blob that names the key that wrapped it, so rotation can
// find and rewrap blobs per key ID without touching the value ciphertexts.
package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// Sentinel errors callers branch on.
var (
	// ErrUnknownKey means the blob was sealed under a master key the ring does not hold.
	// A server reloads the ring from the data directory and retries once.
	ErrUnknownKey = errors.New("unknown master key")
	// ErrDecrypt means authentication failed: the blob was altered, or it belongs to another
	// tenant, owner or field than the AAD given.
	ErrDecrypt = errors.New("decrypt: message authentication failed")
	// ErrMalformed means the bytes are not a blob of a known format (wrong magic, version or
	// length); they were never produced by Seal or were truncated.
	ErrMalformed = errors.New("malformed sealed value")
	// ErrBadKeyFile means a master key file exists but does not hold a key.
	ErrBadKeyFile = errors.New("bad master key file")
)

// AAD names where a sealed value lives. All three parts are authenticated: opening with any
// part different fails with ErrDecrypt.
type AAD struct {
	// Tenant is the workspace the value belongs to.
	Tenant string
	// Owner is the row, e.g. "cert:edge-client" or "node:tcp-out-3".
	Owner string
	// Field is the column or credential key, e.g. "keyPem".
	Field string
}

// Blob layout, version 1. Every field has a fixed size except the ciphertext, whose length
// is recorded, so truncation or padding is detected structurally as ErrMalformed:
//
//	magic      3  "lze"
//	version    1  0x01
//	key ID     8  first 8 bytes of SHA-256 of the wrapping master key
//	wrap nonce 12
//	wrapped    48 DEK (32) + GCM tag (16), under the master key
//	length     4  big-endian plaintext length
//	nonce      12
//	ciphertext length + 16 (GCM tag), under the DEK
//
// Rewrap replaces key ID, wrap nonce and wrapped DEK only.
const (
	magic       = "lze"
	version1    = 1
	keyIDSize   = 8
	nonceSize   = 12
	tagSize     = 16
	wrappedSize = KeySize + tagSize

	offVersion   = len(magic)
	offKeyID     = offVersion + 1
	offWrapNonce = offKeyID + keyIDSize
	offWrapped   = offWrapNonce + nonceSize
	offLength    = offWrapped + wrappedSize
	offNonce     = offLength + 4
	offValue     = offNonce + nonceSize

	// Overhead is how many bytes a blob adds to its plaintext.
	Overhead = offValue + tagSize
)

// maxPlaintext keeps the recorded length, and the blob's size, within what a uint32 and an
// int on 32-bit platforms hold.
const maxPlaintext = math.MaxInt32 - Overhead

// Domain labels keep the three uses of AES-GCM apart: a wrapped DEK can never be presented
// as a value or a file, whatever the caller's AAD bytes.
const (
	labelWrap  = "loopze/envelope/v1/dek\x00"
	labelValue = "loopze/envelope/v1/value\x00"
	labelFile  = "loopze/envelope/v1/file\x00"
)

// blob is a parsed, structurally valid blob; its slices alias the input.
type blob struct {
	keyID     []byte
	wrapNonce []byte
	wrapped   []byte
	nonce     []byte
	value     []byte // ciphertext and tag
}

// parse checks structure only; it never decrypts.
func parse(b []byte) (blob, error) {
	if len(b) < Overhead {
		return blob{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte minimum", ErrMalformed, len(b), Overhead)
	}
	if string(b[:len(magic)]) != magic {
		return blob{}, fmt.Errorf("%w: not an envelope blob", ErrMalformed)
	}
	if v := b[offVersion]; v != version1 {
		return blob{}, fmt.Errorf("%w: unsupported format version %d", ErrMalformed, v)
	}
	n := binary.BigEndian.Uint32(b[offLength:offNonce])
	if uint64(len(b)) != uint64(Overhead)+uint64(n) {
		return blob{}, fmt.Errorf("%w: %d bytes, but the header says %d", ErrMalformed, len(b), uint64(Overhead)+uint64(n))
	}
	return blob{
		keyID:     b[offKeyID:offWrapNonce],
		wrapNonce: b[offWrapNonce:offWrapped],
		wrapped:   b[offWrapped:offLength],
		nonce:     b[offNonce:offValue],
		value:     b[offValue:],
	}, nil
}

// Tag is the GCM tag of a blob's value ciphertext, its last 16 bytes: it identifies the
// sealed value, as every seal draws a fresh data key and nonce, and Rewrap leaves it as it
// is. A blob too short to hold one gives its bytes, zero-padded.
func Tag(b []byte) [tagSize]byte {
	var t [tagSize]byte
	copy(t[:], b[max(0, len(b)-tagSize):])
	return t
}

// KeyID returns the ID of the master key a blob is wrapped under, without opening it.
func KeyID(b []byte) (string, error) {
	p, err := parse(b)
	if err != nil {
		return "", fmt.Errorf("read key ID: %w", err)
	}
	return hex.EncodeToString(p.keyID), nil
}

// appendAAD encodes label, version, optional key ID and the AAD parts. Each part carries a
// length prefix, so ("ab","c") and ("a","bc") never encode the same.
func appendAAD(dst []byte, label string, keyID []byte, aad AAD) []byte {
	dst = append(dst, label...)
	dst = append(dst, version1)
	dst = append(dst, keyID...)
	for _, s := range [...]string{aad.Tenant, aad.Owner, aad.Field} {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

func aadLen(label string, aad AAD) int {
	return len(label) + 1 + keyIDSize + 3*4 + len(aad.Tenant) + len(aad.Owner) + len(aad.Field)
}

// Seal encrypts plaintext for the place aad names, under a fresh data key wrapped by the
// current master key.
func (r *Ring) Seal(plaintext []byte, aad AAD) ([]byte, error) {
	if len(plaintext) > maxPlaintext {
		return nil, fmt.Errorf("seal: value of %d bytes exceeds the %d-byte limit", len(plaintext), maxPlaintext)
	}
	mk := r.keys.Load().current

	// One read for the DEK and both nonces. Random 96-bit nonces under one master key stay
	// safe for about 2^32 wraps; every value has its own DEK, so its nonce is used once.
	var rnd [KeySize + 2*nonceSize]byte
	defer clear(rnd[:])
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("seal: random data key: %w", err)
	}
	dek, wrapNonce, nonce := rnd[:KeySize], rnd[KeySize:KeySize+nonceSize], rnd[KeySize+nonceSize:]

	out := make([]byte, offValue, Overhead+len(plaintext))
	copy(out, magic)
	out[offVersion] = version1
	copy(out[offKeyID:], mk.rawID[:])
	copy(out[offWrapNonce:], wrapNonce)
	binary.BigEndian.PutUint32(out[offLength:], uint32(len(plaintext)))
	copy(out[offNonce:], nonce)

	dekAEAD, err := newGCM(dek)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	// The value's AAD leaves out the master key ID on purpose: Rewrap changes the key ID
	// but must keep the value ciphertext. The ID is bound through the wrapped DEK instead.
	ad := make([]byte, 0, max(aadLen(labelWrap, aad), aadLen(labelValue, aad)))
	ad = appendAAD(ad, labelValue, nil, aad)
	out = dekAEAD.Seal(out, nonce, plaintext, ad)

	ad = appendAAD(ad[:0], labelWrap, mk.rawID[:], aad)
	mk.aead.Seal(out[offWrapped:offWrapped], wrapNonce, dek, ad)
	return out, nil
}

// Open decrypts a blob sealed for the place aad names. A key the ring lacks is ErrUnknownKey
// (the message names its ID), a blob altered or opened with another AAD is ErrDecrypt, and
// bytes that are not a blob are ErrMalformed.
func (r *Ring) Open(b []byte, aad AAD) ([]byte, error) {
	p, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("open sealed value: %w", err)
	}
	dek, err := r.unwrap(p, aad)
	if err != nil {
		return nil, fmt.Errorf("open sealed value: %w", err)
	}
	defer clear(dek)
	dekAEAD, err := newGCM(dek)
	if err != nil {
		return nil, fmt.Errorf("open sealed value: %w", err)
	}
	ad := appendAAD(make([]byte, 0, aadLen(labelValue, aad)), labelValue, nil, aad)
	plain, err := dekAEAD.Open(make([]byte, 0, len(p.value)-tagSize), p.nonce, p.value, ad)
	if err != nil {
		return nil, fmt.Errorf("open sealed value: value: %w", ErrDecrypt)
	}
	return plain, nil
}

// Rewrap re-wraps a blob's data key under the current master key and returns the new blob;
// the value ciphertext is carried over unchanged, so rotation costs two small GCM operations
// per value whatever its size. The AAD must be the blob's own: the unwrap authenticates it.
// A blob already under the current key comes back as an unchanged copy.
func (r *Ring) Rewrap(b []byte, aad AAD) ([]byte, error) {
	p, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("rewrap sealed value: %w", err)
	}
	dek, err := r.unwrap(p, aad)
	if err != nil {
		return nil, fmt.Errorf("rewrap sealed value: %w", err)
	}
	defer clear(dek)
	out := bytes.Clone(b)
	cur := r.keys.Load().current
	if bytes.Equal(p.keyID, cur.rawID[:]) {
		return out, nil
	}
	wrapNonce := out[offWrapNonce:offWrapped]
	if _, err := rand.Read(wrapNonce); err != nil {
		return nil, fmt.Errorf("rewrap sealed value: random nonce: %w", err)
	}
	copy(out[offKeyID:], cur.rawID[:])
	ad := appendAAD(make([]byte, 0, aadLen(labelWrap, aad)), labelWrap, cur.rawID[:], aad)
	cur.aead.Seal(out[offWrapped:offWrapped], wrapNonce, dek, ad)
	return out, nil
}

// unwrap returns the blob's data key, authenticated against aad and the key ID.
func (r *Ring) unwrap(p blob, aad AAD) ([]byte, error) {
	id := hex.EncodeToString(p.keyID)
	mk, ok := r.keys.Load().byID[id]
	if !ok {
		return nil, fmt.Errorf("%w %s", ErrUnknownKey, id)
	}
	ad := appendAAD(make([]byte, 0, aadLen(labelWrap, aad)), labelWrap, p.keyID, aad)
	dek, err := mk.aead.Open(make([]byte, 0, KeySize), p.wrapNonce, p.wrapped, ad)
	if err != nil {
		return nil, fmt.Errorf("data key: %w", ErrDecrypt)
	}
	return dek, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("data key cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("data key cipher: %w", err)
	}
	return aead, nil
}

// SealWithCurrent encrypts plaintext directly under the current master key, for whole files
// (credentials.json) whose header the caller authenticates as aad. It returns the key ID to
// record in that header and nonce||ciphertext||tag. The key ID is authenticated too.
func (r *Ring) SealWithCurrent(plaintext, aad []byte) (keyID string, nonceAndCiphertext []byte, err error) {
	if len(plaintext) > maxPlaintext {
		return "", nil, fmt.Errorf("seal file: %d bytes exceeds the %d-byte limit", len(plaintext), maxPlaintext)
	}
	mk := r.keys.Load().current
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+tagSize)
	if _, err := rand.Read(out); err != nil {
		return "", nil, fmt.Errorf("seal file: random nonce: %w", err)
	}
	out = mk.aead.Seal(out, out[:nonceSize], plaintext, fileAAD(mk.rawID[:], aad))
	return mk.id, out, nil
}

// OpenWith decrypts what SealWithCurrent returned, under the named master key and the same
// aad. Errors are ErrUnknownKey, ErrDecrypt and ErrMalformed, as for Open.
func (r *Ring) OpenWith(keyID string, nonceAndCiphertext, aad []byte) ([]byte, error) {
	mk, ok := r.keys.Load().byID[keyID]
	if !ok {
		// An ID read from a damaged header is not echoed: it is not known to be an ID.
		if _, err := hex.DecodeString(keyID); err != nil || len(keyID) != 2*keyIDSize {
			return nil, fmt.Errorf("open file: %w: key ID is not %d hex characters", ErrMalformed, 2*keyIDSize)
		}
		return nil, fmt.Errorf("open file: %w %s", ErrUnknownKey, keyID)
	}
	if len(nonceAndCiphertext) < nonceSize+tagSize {
		return nil, fmt.Errorf("open file: %w: %d bytes, shorter than the %d-byte minimum",
			ErrMalformed, len(nonceAndCiphertext), nonceSize+tagSize)
	}
	nonce, ct := nonceAndCiphertext[:nonceSize], nonceAndCiphertext[nonceSize:]
	plain, err := mk.aead.Open(make([]byte, 0, len(ct)-tagSize), nonce, ct, fileAAD(mk.rawID[:], aad))
	if err != nil {
		return nil, fmt.Errorf("open file: %w", ErrDecrypt)
	}
	return plain, nil
}

func fileAAD(keyID, aad []byte) []byte {
	ad := make([]byte, 0, len(labelFile)+1+len(keyID)+len(aad))
	ad = append(ad, labelFile...)
	ad = append(ad, version1)
	ad = append(ad, keyID...)
	return append(ad, aad...)
}
