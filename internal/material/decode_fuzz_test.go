package material_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loopze/certstore/internal/material"
	mt "github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/secret"
)

// seedPass protects the seeds; it looks like nothing a message would say by chance.
const seedPass = "fuzz#Seed-pass9"

// opensslSeeds writes material with the openssl command for fuzz seeds: a PKCS#12 (modern
// and legacy), encrypted PKCS#8 (PBKDF2 and scrypt), a legacy encrypted PEM key and DER.
func opensslSeeds(f *testing.F) map[string][]byte {
	f.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		f.Fatalf("the fuzz seeds need the openssl command: %v", err)
	}
	dir := f.TempDir()
	run := func(args ...string) {
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			f.Fatalf("openssl %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
		"-subj", "/CN=fuzz", "-days", "1", "-addext", "subjectAltName=DNS:fuzz.example.com")
	run("pkcs12", "-export", "-inkey", "k.pem", "-in", "c.pem", "-passout", "pass:"+seedPass, "-out", "m.p12")
	run("pkcs12", "-export", "-legacy", "-inkey", "k.pem", "-in", "c.pem", "-passout", "pass:"+seedPass, "-out", "l.p12")
	run("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "k.pem", "-passout", "pass:"+seedPass, "-out", "k8.pem")
	run("pkcs8", "-topk8", "-scrypt", "-in", "k.pem", "-passout", "pass:"+seedPass, "-outform", "der", "-out", "ks.der")
	run("ec", "-aes256", "-in", "k.pem", "-passout", "pass:"+seedPass, "-out", "kl.pem")
	run("x509", "-in", "c.pem", "-outform", "der", "-out", "c.der")
	out := map[string][]byte{}
	for _, n := range []string{"c.pem", "k.pem", "m.p12", "l.p12", "k8.pem", "ks.der", "kl.pem", "c.der"} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			f.Fatal(err)
		}
		out[n] = b
	}
	return out
}

// FuzzDecode feeds arbitrary material in every encoding to Decode: it must never panic,
// must return either material or issues, name a field in every issue, and never put the
// passphrase or PEM armour in one.
func FuzzDecode(f *testing.F) {
	s := opensslSeeds(f)
	leaf := mt.NewSelfSigned(f, mt.Options{DNSNames: []string{"a.example.com"}})
	const pass = seedPass
	// mode picks which fields the data go into.
	f.Add(uint8(0), uint8(1), s["m.p12"], []byte(nil), pass)
	f.Add(uint8(0), uint8(1), s["l.p12"], []byte(nil), pass)
	f.Add(uint8(0), uint8(2), s["m.p12"], []byte(nil), "Wr0ng#passphrase")
	f.Add(uint8(1), uint8(1), s["c.pem"], s["k8.pem"], pass)
	f.Add(uint8(1), uint8(2), s["c.pem"], s["kl.pem"], pass)
	f.Add(uint8(2), uint8(1), s["c.der"], s["ks.der"], pass)
	f.Add(uint8(1), uint8(0), append(leaf.CertPEM(), leaf.CertPEM()...), leaf.KeyPEM(), "")
	f.Add(uint8(2), uint8(1), []byte{0x30, 0x82, 0xff, 0xff}, []byte{0x30, 0x03, 0x02, 0x01, 0x03}, pass)

	now := time.Now()
	f.Fuzz(func(t *testing.T, mode, kind uint8, a, b []byte, passphrase string) {
		k := fuzzKinds[int(kind)%len(fuzzKinds)]
		var enc material.Encoded
		switch mode % 3 {
		case 0:
			enc = material.Encoded{PKCS12: a, Passphrase: secret.String(passphrase), KeyDER: b}
		case 1:
			enc = material.Encoded{CertPEM: a, KeyPEM: b, KeyPassphrase: secret.String(passphrase)}
		default:
			enc = material.Encoded{CertDER: a, KeyDER: b, KeyPassphrase: secret.String(passphrase)}
		}
		m, n, errs, err := material.Decode(context.Background(), k, enc, material.InlineFields, now, material.KDF{})
		if err != nil {
			t.Fatalf("without a budget every derivation runs: %v", err)
		}
		if (m == nil) == (len(errs) == 0) || (m == nil) != (n == nil) {
			t.Fatalf("want exactly one of material and issues, got %v and %v", m != nil, errs)
		}
		for _, is := range append(errs, warningsOf(m)...) {
			if is.Field == "" || is.Message == "" || len(is.Message) > 600 {
				t.Fatalf("bad issue %q", is)
			}
			// Short or plain passphrases occur in messages by chance ("wrong passphrase").
			if len(passphrase) >= 10 && strings.ContainsAny(passphrase, "#$%&*+!") && strings.Contains(is.Message, passphrase) {
				t.Fatalf("issue quotes the passphrase: %q", is)
			}
		}
		requireClean(t, errs)
		if m == nil {
			return
		}
		// What Decode stores must inspect again to the same material.
		again, errs := material.Inspect(k, n.Cert, n.Key, material.PEMFields, now)
		if len(errs) > 0 || again.Metadata.FingerprintSHA256 != m.Metadata.FingerprintSHA256 {
			t.Fatalf("normalised material does not inspect again: %v", errs)
		}
		if secret.LooksLikePEM(string(n.Key)) && strings.Contains(string(n.Key), "ENCRYPTED") {
			t.Fatal("the stored key is still encrypted")
		}
	})
}
