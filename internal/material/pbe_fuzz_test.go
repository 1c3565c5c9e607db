package material

import (
	"context"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
)

// maxDerivationMemory is the most one admitted derivation may be charged: the scrypt bound
// plus the second pass of its blocks through PBKDF2 at the largest r and p.
const maxDerivationMemory = MaxScryptMemory + 128*MaxScryptR*MaxScryptParallel + derivationSlack

var errFuzzBusy = errors.New("fuzz: never derive")

// FuzzPBES2Params feeds arbitrary PBES2 parameters to the decryption of an encrypted key:
// raw bytes, or scrypt or PBKDF2 parameters built from arbitrary numbers. It must never
// panic, and a key derivation may be asked for only with parameters inside every bound
// (the budget refuses each one, so none runs); whatever kdfParams accepts is inside them.
func FuzzPBES2Params(f *testing.F) {
	salt, iv := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	f.Add(uint8(1), []byte(nil), int64(16384), int64(8), int64(1), 0)
	f.Add(uint8(1), []byte(nil), int64(2), int64(131072), int64(16), 0)
	f.Add(uint8(1), []byte(nil), int64(1<<15), int64(8), int64(1), 32)
	f.Add(uint8(2), []byte(nil), int64(2048), int64(0), int64(0), 32)
	f.Add(uint8(2), []byte(nil), int64(MaxKDFIterations+1), int64(0), int64(0), 0)
	f.Add(uint8(0), pbes2(f, scryptAlg(f, salt, 16384, 8, 1), iv).Parameters.FullBytes, int64(0), int64(0), int64(0), 0)
	f.Add(uint8(0), pbes2(f, pbkdf2Alg(f, salt, 2048, 32), iv).Parameters.FullBytes, int64(0), int64(0), int64(0), 0)
	f.Add(uint8(0), []byte{0x30, 0x03, 0x02, 0x01, 0x03}, int64(0), int64(0), int64(0), 0)

	data := make([]byte, 32)
	f.Fuzz(func(t *testing.T, mode uint8, raw []byte, n, r, p int64, keyLength int) {
		params := raw
		switch mode % 3 {
		case 1:
			sp, err := asn1.Marshal(scryptParams{Salt: salt, N: big.NewInt(n), R: big.NewInt(r), P: big.NewInt(p), KeyLength: keyLength})
			if err != nil {
				return
			}
			params = pbes2(t, pkix.AlgorithmIdentifier{Algorithm: oidScrypt, Parameters: asn1.RawValue{FullBytes: sp}}, iv).Parameters.FullBytes
		case 2:
			pp, err := asn1.Marshal(pbkdf2Params{Salt: asn1.RawValue{Tag: asn1.TagOctetString, Bytes: salt}, Iterations: big.NewInt(n), KeyLength: keyLength})
			if err != nil {
				return
			}
			params = pbes2(t, pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: pp}}, iv).Parameters.FullBytes
		}

		budget := &recordingBudget{refuse: errFuzzBusy}
		d := newDeriver(context.Background(), KDF{Budget: budget})
		if _, err := decryptPBES2(d, params, data, []byte(testPass)); err == nil {
			t.Fatal("decrypted although no derivation was admitted")
		}
		if d.n != 0 {
			t.Fatalf("%d derivations ran", d.n)
		}
		for _, m := range budget.asked {
			if m <= 0 || m > maxDerivationMemory {
				t.Fatalf("a derivation of %d bytes was asked for", m)
			}
		}

		var pb pbes2Params
		if unmarshalAll(params, &pb) != nil {
			return
		}
		spec, err := kdfParams(pb.KDF)
		if err != nil {
			if err.Error() == "" || len(err.Error()) > 300 {
				t.Fatalf("unhelpful error %q", err)
			}
			return
		}
		if len(spec.salt) > maxSaltLen || spec.keyLength < 0 || spec.keyLength > maxKeyLength {
			t.Fatalf("salt of %d bytes or key length %d accepted", len(spec.salt), spec.keyLength)
		}
		if spec.scrypt {
			if spec.n < MinScryptN || spec.n&(spec.n-1) != 0 || spec.r < 1 || spec.r > MaxScryptR || spec.p < 1 || spec.p > MaxScryptParallel ||
				128*int64(spec.r)*(int64(spec.n)+int64(spec.p)+2) > MaxScryptMemory {
				t.Fatalf("scrypt N=%d r=%d p=%d accepted", spec.n, spec.r, spec.p)
			}
		} else if spec.iterations < 1 || spec.iterations > MaxKDFIterations {
			t.Fatalf("PBKDF2 with %d iterations accepted", spec.iterations)
		}
		if m := spec.memory(); m > maxDerivationMemory {
			t.Fatalf("charged %d bytes", m)
		}
	})
}
