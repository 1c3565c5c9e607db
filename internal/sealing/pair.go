package sealing

import (
	"fmt"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/secret"
)

// Pair is an inline entry's material as it is stored: the sealed certificate chain, the
// sealed key (nil for a ca-bundle) and the ID of the master key that sealed them.
type Pair struct {
	Cert, Key []byte
	KeyID     string
}

// Place names where a pair lives: an entry's own row (Version 0) or one version of its
// history.
type Place struct {
	Tenant, EntryID string
	Version         int64
}

func (p Place) aad(field string) envelope.AAD {
	if p.Version > 0 {
		return EntryVersion(p.Tenant, p.EntryID, p.Version, field)
	}
	return Entry(p.Tenant, p.EntryID, field)
}

func (p Place) String() string {
	if p.Version > 0 {
		return fmt.Sprintf("version %d of %s", p.Version, p.EntryID)
	}
	return p.EntryID
}

// SealPair seals an inline entry's certificate chain and key (empty for a ca-bundle) under
// ring's current key, for the place they will live.
func SealPair(ring *envelope.Ring, at Place, cert, key secret.PEM) (Pair, error) {
	var p Pair
	var err error
	if p.Cert, err = ring.Seal(cert, at.aad(FieldCert)); err != nil {
		return Pair{}, fmt.Errorf("seal certificate of %s: %w", at, err)
	}
	if len(key) > 0 {
		if p.Key, err = ring.Seal(key, at.aad(FieldKey)); err != nil {
			return Pair{}, fmt.Errorf("seal key of %s: %w", at, err)
		}
	}
	p.KeyID = ring.CurrentKeyID()
	return p, nil
}

// OpenPair opens a pair sealed for the place at, reloading the ring once when it names a
// master key this process does not hold (see Open).
func OpenPair(ring *envelope.Ring, at Place, p Pair) (cert, key secret.PEM, err error) {
	open := func(blob []byte, field string) (secret.PEM, error) {
		if len(blob) == 0 {
			return nil, nil
		}
		pt, err := Open(ring, blob, at.aad(field))
		if err != nil {
			return nil, fmt.Errorf("open %s of %s: %w", field, at, err)
		}
		return secret.PEM(pt), nil
	}
	if cert, err = open(p.Cert, FieldCert); err != nil {
		return nil, nil, err
	}
	if key, err = open(p.Key, FieldKey); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// Stamp identifies a pair's material: the tags of its two sealed values (envelope.Tag).
// Every seal draws a fresh data key and nonce, so material sealed again (a PUT, a restore,
// an import) never carries the stamp of the material it replaces, while a rewrap under
// another master key keeps it. Caches key what they derive from a pair by it.
func (p Pair) Stamp() [32]byte {
	var s [32]byte
	c, k := envelope.Tag(p.Cert), envelope.Tag(p.Key)
	copy(s[:16], c[:])
	copy(s[16:], k[:])
	return s
}

// RewrapPair wraps a pair's data keys under ring's current master key; the values'
// ciphertext, and so their Stamp, stays as it is.
func RewrapPair(ring *envelope.Ring, at Place, p Pair) (Pair, error) {
	var out Pair
	var err error
	if out.Cert, err = ring.Rewrap(p.Cert, at.aad(FieldCert)); err != nil {
		return Pair{}, fmt.Errorf("rewrap certificate of %s: %w", at, err)
	}
	if len(p.Key) > 0 {
		if out.Key, err = ring.Rewrap(p.Key, at.aad(FieldKey)); err != nil {
			return Pair{}, fmt.Errorf("rewrap key of %s: %w", at, err)
		}
	}
	out.KeyID = ring.CurrentKeyID()
	return out, nil
}
