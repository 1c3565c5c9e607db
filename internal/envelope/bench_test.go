package envelope_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/loopze/certstore/internal/envelope"
)

// benchSizes cover a node credential, a private key and a CA bundle.
var benchSizes = []int{32, 2 << 10, 64 << 10}

func BenchmarkSeal(b *testing.B) {
	r, _ := newTestRing(b)
	for _, size := range benchSizes {
		plain := bytes.Repeat([]byte{'x'}, size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Seal(plain, testAAD); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	r, _ := newTestRing(b)
	for _, size := range benchSizes {
		blob, err := r.Seal(bytes.Repeat([]byte{'x'}, size), testAAD)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Open(blob, testAAD); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRewrap(b *testing.B) {
	oldRing, oldKey := newTestRing(b)
	blob, err := oldRing.Seal(bytes.Repeat([]byte{'x'}, 2<<10), testAAD)
	if err != nil {
		b.Fatal(err)
	}
	newKey, err := envelope.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	r, err := envelope.NewRing(newKey, oldKey)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Rewrap(blob, testAAD); err != nil {
			b.Fatal(err)
		}
	}
}
