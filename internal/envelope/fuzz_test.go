package envelope

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to every function that parses a blob: none may panic, and
// each failure must be one of the documented errors.
func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{7}, KeySize)
	r, err := NewRing(key)
	if err != nil {
		f.Fatal(err)
	}
	aad := AAD{Tenant: "acme", Owner: "cert:edge-client", Field: "keyPem"}
	valid, err := r.Seal([]byte("seed value"), aad)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:Overhead])
	f.Add([]byte{})
	f.Add([]byte(magic + "\x01"))
	f.Add(append([]byte(magic+"\x02"), make([]byte, Overhead)...))

	f.Fuzz(func(t *testing.T, b []byte) {
		documented := func(err error) bool {
			return errors.Is(err, ErrMalformed) || errors.Is(err, ErrDecrypt) || errors.Is(err, ErrUnknownKey)
		}
		plain, err := r.Open(b, aad)
		if err != nil && !documented(err) {
			t.Fatalf("Open: undocumented error %v", err)
		}
		// The only values ever sealed under this key are seeds (sealed afresh in each fuzz
		// worker, so compared by plaintext rather than bytes).
		if err == nil && string(plain) != "seed value" {
			t.Fatalf("Open accepted a blob Seal never produced")
		}
		if _, err := r.Rewrap(b, aad); err != nil && !documented(err) {
			t.Fatalf("Rewrap: undocumented error %v", err)
		}
		if _, err := KeyID(b); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("KeyID: undocumented error %v", err)
		}
		if _, err := r.OpenWith(r.CurrentKeyID(), b, nil); err != nil && !documented(err) {
			t.Fatalf("OpenWith: undocumented error %v", err)
		}
	})
}

// FuzzParseKey checks the key file parser never panics and never echoes its input.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Add([]byte(""))
	f.Add([]byte("not base64 at all"))
	f.Add([]byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		key, err := parseKey(raw)
		if err != nil {
			if text := bytes.TrimSpace(raw); len(text) >= 4 && bytes.Contains([]byte(err.Error()), text) {
				t.Fatalf("error quotes the input")
			}
			return
		}
		if len(key) != KeySize {
			t.Fatalf("parsed a %d-byte key", len(key))
		}
	})
}
