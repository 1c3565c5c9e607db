package envelope

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// A key wrap is how a master key seals a tenant key: AES-256-GCM with a random 96-bit IV
// (never all zeros, which the PKCS#11 key check value uses), the IV first and the tag last,
// bound to KeyWrapLabel followed by the caller's additional data. A master key in a file
// and one in a PKCS#11 token write the same bytes, so a value wrapped by one unwraps under
// the other holding the same key.
const (
	// KeyWrapLabel prefixes the additional data of every key wrap, so a wrap can never be
	// taken for a sealed value or a credentials file under the same key.
	KeyWrapLabel = "loopze/masterkey/v1/wrap\x00"
	// KeyWrapIVSize and KeyWrapTagSize frame a wrapped key.
	KeyWrapIVSize  = 12
	KeyWrapTagSize = 16
	// MaxKeyWrap bounds what a wrap seals: keys, not data.
	MaxKeyWrap = 1024
)

// ErrKeyUnwrap means a wrapped key did not authenticate: altered, made under another key,
// or bound to other additional data.
var ErrKeyUnwrap = errors.New("unwrap: message authentication failed")

// KeyWrapAAD is the additional data a key wrap binds: KeyWrapLabel then aad.
func KeyWrapAAD(aad []byte) []byte {
	ad := make([]byte, 0, len(KeyWrapLabel)+len(aad))
	return append(append(ad, KeyWrapLabel...), aad...)
}

// WrapKey wraps plaintext (1 to MaxKeyWrap bytes) under aead, bound to aad.
func WrapKey(aead cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	if len(plaintext) == 0 || len(plaintext) > MaxKeyWrap {
		return nil, fmt.Errorf("wrap: %d bytes, want 1 to %d", len(plaintext), MaxKeyWrap)
	}
	out := make([]byte, KeyWrapIVSize, KeyWrapIVSize+len(plaintext)+KeyWrapTagSize)
	for ZeroIV(out) {
		if _, err := rand.Read(out); err != nil {
			return nil, fmt.Errorf("wrap: random IV: %w", err)
		}
	}
	return aead.Seal(out, out, plaintext, KeyWrapAAD(aad)), nil
}

// UnwrapKey opens what WrapKey returned under the same aad; ErrKeyUnwrap when it does not
// authenticate.
func UnwrapKey(aead cipher.AEAD, wrapped, aad []byte) ([]byte, error) {
	if len(wrapped) <= KeyWrapIVSize+KeyWrapTagSize || len(wrapped) > KeyWrapIVSize+KeyWrapTagSize+MaxKeyWrap {
		return nil, fmt.Errorf("%w: %d bytes is not a wrapped key", ErrKeyUnwrap, len(wrapped))
	}
	plain, err := aead.Open(nil, wrapped[:KeyWrapIVSize], wrapped[KeyWrapIVSize:], KeyWrapAAD(aad))
	if err != nil {
		return nil, ErrKeyUnwrap
	}
	return plain, nil
}

// ZeroIV reports an all-zero IV: the one the PKCS#11 key check value uses, which no wrap
// may.
func ZeroIV(iv []byte) bool {
	for _, b := range iv {
		if b != 0 {
			return false
		}
	}
	return true
}

// UnwrapKey unwraps a key wrapped under the ring's master key keyID: how a runtime given
// loopze.key opens the tenant key a credentials file carries. ErrUnknownKey when the ring
// does not hold keyID.
func (r *Ring) UnwrapKey(keyID string, wrapped, aad []byte) ([]byte, error) {
	mk, ok := r.keys.Load().byID[keyID]
	if !ok {
		return nil, fmt.Errorf("unwrap under master key %s: %w", keyID, ErrUnknownKey)
	}
	plain, err := UnwrapKey(mk.aead, wrapped, aad)
	if err != nil {
		return nil, fmt.Errorf("unwrap under master key %s: %w", keyID, err)
	}
	return plain, nil
}
