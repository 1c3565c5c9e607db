package auth

import (
	"testing"
	"time"
)

func BenchmarkVerifyHS256(b *testing.B) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, err := NewVerifier(Config{HMACSecret: secret})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := Mint(secret, Principal{Subject: "bench", Tenant: "acme", Role: Editor}, time.Hour, "", "", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
