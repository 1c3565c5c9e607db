package material

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/scrypt"
	"software.sslmate.com/src/go-pkcs12"

	mt "github.com/loopze/certstore/internal/material/materialtest"
)

var (
	oidCertBag      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidX509CertType = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
)

// recordingBudget admits every derivation and records what was asked; onRelease, when
// set, runs as each admission is given back.
type recordingBudget struct {
	mu        sync.Mutex
	asked     []int64
	onRelease func()
	refuse    error
}

func (b *recordingBudget) Acquire(_ context.Context, _ string, memory int64) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked = append(b.asked, memory)
	if b.refuse != nil {
		return nil, b.refuse
	}
	return func() {
		if b.onRelease != nil {
			b.onRelease()
		}
	}, nil
}

func (b *recordingBudget) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.asked)
}

// testDeriver is a deriver under a recording budget.
func testDeriver(ctx context.Context) (*deriver, *recordingBudget) {
	b := &recordingBudget{}
	return newDeriver(ctx, KDF{Budget: b, Tenant: "t"}), b
}

// pfxBuilder writes PFX files the way tools do, with whatever parameters a test needs.
type pfxBuilder struct {
	t    testing.TB
	pass string
	cert *mt.Cert
}

func newPFXBuilder(t testing.TB) *pfxBuilder {
	return &pfxBuilder{t: t, pass: testPass, cert: mt.NewSelfSigned(t, mt.Options{CommonName: "pfx"})}
}

func (b *pfxBuilder) marshal(v any) []byte {
	b.t.Helper()
	der, err := asn1.Marshal(v)
	require.NoError(b.t, err)
	return der
}

func (b *pfxBuilder) certBag() p12SafeBag {
	type certBagValue struct {
		ID   asn1.ObjectIdentifier
		Data asn1.RawValue `asn1:"tag:0,explicit"`
	}
	v := b.marshal(certBagValue{ID: oidX509CertType, Data: explicit0(b.marshal(b.cert.Cert.Raw))})
	return p12SafeBag{ID: oidCertBag, Value: explicit0(v)}
}

func (b *pfxBuilder) pkcs8() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(b.cert.Key)
	require.NoError(b.t, err)
	return der
}

// shroudedBag is the key, encrypted under PBES2 with kdfAlg (whose key is aesKey; nil
// for random bytes a derivation must never reach).
func (b *pfxBuilder) shroudedBag(kdfAlg pkix.AlgorithmIdentifier, aesKey []byte) p12SafeBag {
	iv := []byte("fedcba9876543210")
	return p12SafeBag{ID: oidShroudedKeyBag, Value: explicit0(encryptedPKCS8(b.t, pbes2(b.t, kdfAlg, iv), iv, aesKey, b.pkcs8()))}
}

func (b *pfxBuilder) data(bags ...p12SafeBag) p12ContentInfo {
	return p12ContentInfo{ContentType: oidDataContent, Content: explicit0(b.marshal(b.marshal(bags)))}
}

// encrypted is a content of bags under PBES2 with kdfAlg (key aesKey, nil for random).
func (b *pfxBuilder) encrypted(kdfAlg pkix.AlgorithmIdentifier, aesKey []byte, bags ...p12SafeBag) p12ContentInfo {
	iv := []byte("0011223344556677")
	var sealed []byte
	if aesKey == nil {
		sealed = make([]byte, 64)
		_, _ = rand.Read(sealed)
	} else {
		sealed = cbcEncrypt(b.t, aesKey, iv, b.marshal(bags))
	}
	ed := p12EncryptedData{EncryptedContentInfo: p12EncryptedContentInfo{
		ContentType: oidDataContent, ContentEncryptionAlgorithm: pbes2(b.t, kdfAlg, iv), EncryptedContent: sealed}}
	return p12ContentInfo{ContentType: oidEncryptedContent, Content: explicit0(b.marshal(ed))}
}

// mac is a classic SHA-256 MAC of the given iterations under the builder's passphrase.
func (b *pfxBuilder) mac(iterations int, salt []byte) func([]byte) p12MacData {
	return func(authSafe []byte) p12MacData {
		digest, _ := macDigest(oidMACSHA256)
		bmp, _ := bmpPassword(b.pass)
		d := p12MacData{Mac: p12DigestInfo{Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidMACSHA256}}, MacSalt: salt,
			Iterations: asn1.RawValue{FullBytes: b.marshal(iterations)}}
		if iterations <= MaxKDFIterations && len(salt) <= maxSaltLen {
			d.Mac.Digest = classicMAC(digest, salt, bmp, iterations, authSafe)
		} else {
			d.Mac.Digest = make([]byte, 32) // never computed: refused first
		}
		return d
	}
}

// pbmac1 is a PBMAC1 MAC whose key PBKDF2 derives as kdf states (keyLength included).
func (b *pfxBuilder) pbmac1(kdf pkix.AlgorithmIdentifier) func([]byte) p12MacData {
	return func([]byte) p12MacData {
		params := b.marshal(pbmac1Params{KDF: kdf, MAC: pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256}})
		return p12MacData{Mac: p12DigestInfo{Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidPBMAC1,
			Parameters: asn1.RawValue{FullBytes: params}}, Digest: make([]byte, 32)}, MacSalt: []byte("unused")}
	}
}

func (b *pfxBuilder) pfx(mac func([]byte) p12MacData, contents ...p12ContentInfo) []byte {
	authSafe := b.marshal(contents)
	pdu := pfxPDU{Version: 3, AuthSafe: p12ContentInfo{ContentType: oidDataContent, Content: explicit0(b.marshal(authSafe))}}
	if mac != nil {
		pdu.MacData = mac(authSafe)
	}
	return b.marshal(pdu)
}

func pbkdf2Alg(t testing.TB, salt []byte, iterations, keyLength int) pkix.AlgorithmIdentifier {
	t.Helper()
	params, err := asn1.Marshal(pbkdf2Params{Salt: asn1.RawValue{Tag: asn1.TagOctetString, Bytes: salt}, Iterations: big.NewInt(int64(iterations)),
		KeyLength: keyLength, PRF: pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256}})
	require.NoError(t, err)
	return pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: params}}
}

// libraryInput inspects the file decodePKCS12 hands the library.
type libraryInput struct {
	mac, encryptedContents, shroudedBags int
}

func inspectLibraryInput(t *testing.T, der []byte) libraryInput {
	t.Helper()
	f, err := scanPKCS12(der, "")
	require.NoError(t, err)
	var in libraryInput
	if len(f.pdu.MacData.Mac.Algorithm.Algorithm) > 0 {
		in.mac = 1
	}
	for _, c := range f.contents {
		if c.encrypted {
			in.encryptedContents++
		}
		for _, b := range c.bags {
			if b.ID.Equal(oidShroudedKeyBag) {
				in.shroudedBags++
			}
		}
	}
	return in
}

// TestPKCS12DerivesEachKeyOnce: a PFX's MAC, its contents and its key are each derived
// once, through the deriver; the file the library is handed has nothing left to derive.
// The hand-built file has two scrypt-encrypted contents (certificates in one, the key
// shrouded under scrypt in the other), which the library could not even decrypt.
func TestPKCS12DerivesEachKeyOnce(t *testing.T) {
	t.Parallel()
	b := newPFXBuilder(t)
	salt := []byte("0123456789abcdef")
	scryptAESKey := func(n, r, p int) []byte {
		k, err := scrypt.Key([]byte(testPass), salt, n, r, p, 32)
		require.NoError(t, err)
		return k
	}
	twoScrypt := b.pfx(b.mac(2048, []byte("macsalt1")),
		b.encrypted(scryptAlg(t, salt, 1024, 8, 1), scryptAESKey(1024, 8, 1), b.certBag()),
		b.encrypted(scryptAlg(t, salt, 2048, 8, 2), scryptAESKey(2048, 8, 2),
			b.shroudedBag(scryptAlg(t, salt, 1024, 8, 1), scryptAESKey(1024, 8, 1))))

	modern, err := pkcs12.Modern2023.Encode(b.cert.Key, b.cert.Cert, nil, testPass)
	require.NoError(t, err)
	pbmac1, err := pkcs12.Modern2026.Encode(b.cert.Key, b.cert.Cert, nil, testPass)
	require.NoError(t, err)

	for _, tc := range []struct {
		name        string
		der         []byte
		derivations int
	}{
		{"two scrypt contents and a scrypt key", twoScrypt, 4}, // MAC, two contents, key
		{"PBES2 with PBKDF2 (Modern2023)", modern, 3},          // MAC, certificates, key
		{"PBMAC1 (Modern2026)", pbmac1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, budget := testDeriver(context.Background())
			certs, key, err := decodePKCS12(d, tc.der, testPass)
			require.NoError(t, err)
			require.Equal(t, b.cert.Cert.Raw, certs[0].Raw)
			require.True(t, key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(b.cert.Key.Public()))
			require.Equal(t, tc.derivations, d.n, "each key derived once")
			require.Equal(t, tc.derivations, budget.count(), "each derivation admitted by the budget")

			f, err := scanPKCS12(tc.der, testPass)
			require.NoError(t, err)
			out, libPass, libDerivations, err := f.open(newDeriver(context.Background(), KDF{}), testPass)
			require.NoError(t, err)
			require.Zero(t, libDerivations)
			require.Empty(t, libPass)
			require.Equal(t, libraryInput{}, inspectLibraryInput(t, out), "nothing left for the library to derive")
		})
	}
}

// TestPKCS12ParametersBoundedBeforeDerivation: every work parameter of a PFX that can be
// seen is checked before the first derivation: the MAC's, each content's, each key bag's
// in an unencrypted content. Nothing is derived or asked of the budget.
func TestPKCS12ParametersBoundedBeforeDerivation(t *testing.T) {
	t.Parallel()
	b := newPFXBuilder(t)
	salt := []byte("0123456789abcdef")
	okMAC := b.mac(2048, []byte("macsalt1"))
	key := b.data(b.shroudedBag(scryptAlg(t, salt, 1024, 8, 1), nil))
	for _, tc := range []struct {
		name string
		der  []byte
		want string
	}{
		{"MAC iterations", b.pfx(b.mac(MaxKDFIterations+1, []byte("s")), b.data(b.certBag())), "over the limit of 1000000"},
		{"MAC salt", b.pfx(b.mac(1, make([]byte, 2000)), b.data(b.certBag())), "MAC salt of 2000 bytes"},
		{"PBMAC1 key too short", b.pfx(b.pbmac1(pbkdf2Alg(t, salt, 1000, 10)), b.data(b.certBag())), "key length of at least 20"},
		{"PBMAC1 key too long", b.pfx(b.pbmac1(pbkdf2Alg(t, salt, 1000, 4096)), b.data(b.certBag())), "stated key length 4096"},
		{"PBMAC1 iterations", b.pfx(b.pbmac1(pbkdf2Alg(t, salt, 2_000_000, 32)), b.data(b.certBag())), "over the limit of 1000000"},
		{"PBMAC1 with scrypt", b.pfx(b.pbmac1(scryptAlg(t, salt, 1024, 8, 1)), b.data(b.certBag())), "PBMAC1 is supported with PBKDF2"},
		{"content: the scrypt allocation", b.pfx(okMAC, b.encrypted(scryptAlg(t, salt, 2, 131072, 16), nil, b.certBag()), key), "r=131072 is over the limit"},
		{"content: PBKDF2 iterations", b.pfx(okMAC, b.encrypted(pbkdf2Alg(t, salt, 5_000_000, 0), nil, b.certBag()), key), "over the limit of 1000000"},
		{"key bag: scrypt p", b.pfx(okMAC, b.data(b.certBag(), b.shroudedBag(scryptAlg(t, salt, 1024, 8, 64), nil))), "p=64 is over the limit"},
		{"key bag: scrypt N", b.pfx(okMAC, b.data(b.certBag(), b.shroudedBag(scryptAlg(t, salt, 1<<20, 8, 1), nil))), "more than the 32 MiB limit"},
		{"two keys", b.pfx(okMAC, b.data(b.certBag(), b.shroudedBag(scryptAlg(t, salt, 1024, 8, 1), nil)), key), "holds 2 private keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, budget := testDeriver(context.Background())
			_, _, err := decodePKCS12(d, tc.der, testPass)
			require.ErrorContains(t, err, tc.want)
			var pe *p12Error
			require.ErrorAs(t, err, &pe)
			require.Zero(t, d.n, "nothing derived")
			require.Zero(t, budget.count(), "nothing asked of the budget")
		})
	}

	// A key bag inside a PBES2 content is seen once that content is decrypted, and is
	// refused then, before its own key is derived.
	aesKey, err := scrypt.Key([]byte(testPass), salt, 1024, 8, 1, 32)
	require.NoError(t, err)
	hidden := b.pfx(okMAC, b.data(b.certBag()),
		b.encrypted(scryptAlg(t, salt, 1024, 8, 1), aesKey, b.shroudedBag(scryptAlg(t, salt, 2, 131072, 16), nil)))
	d, _ := testDeriver(context.Background())
	_, _, err = decodePKCS12(d, hidden, testPass)
	require.ErrorContains(t, err, "r=131072 is over the limit")
	require.Equal(t, 2, d.n, "the MAC and the content, not the key")
}

// TestPKCS12CancelStopsDerivation: once the caller's context ends, no further key of the
// file is derived, and the error says the material was not judged.
func TestPKCS12CancelStopsDerivation(t *testing.T) {
	t.Parallel()
	b := newPFXBuilder(t)
	salt := []byte("0123456789abcdef")
	aesKey, err := scrypt.Key([]byte(testPass), salt, 1024, 8, 1, 32)
	require.NoError(t, err)
	der := b.pfx(b.mac(2048, []byte("macsalt1")),
		b.encrypted(scryptAlg(t, salt, 1024, 8, 1), aesKey, b.certBag()),
		b.data(b.shroudedBag(scryptAlg(t, salt, 1024, 8, 1), aesKey)))

	ctx, cancel := context.WithCancel(context.Background())
	budget := &recordingBudget{onRelease: cancel} // the client goes during the first derivation
	d := newDeriver(ctx, KDF{Budget: budget, Tenant: "t"})
	_, _, err = decodePKCS12(d, der, testPass)
	require.ErrorIs(t, err, ErrNotAdmitted)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 1, d.n, "the MAC only")
	require.Equal(t, 1, budget.count(), "no further derivation was even asked for")

	// A budget that says no: nothing derived, and its error comes through.
	busy := errors.New("busy")
	d = newDeriver(context.Background(), KDF{Budget: &recordingBudget{refuse: busy}, Tenant: "t"})
	_, _, err = decodePKCS12(d, der, testPass)
	require.ErrorIs(t, err, ErrNotAdmitted)
	require.ErrorIs(t, err, busy)
	require.Zero(t, d.n)
}

// TestLegacyPKCS12KeyFirst: openssl -legacy writes the RC2-encrypted certificates before
// the 3DES-shrouded key bag. The library is handed the key's content first, with a MAC of
// one iteration, and derives the legacy content and the key once each, as admitted; a
// wrong passphrase is caught by the file's own MAC before anything else is derived.
func TestLegacyPKCS12KeyFirst(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("this test needs the openssl command: %v", err)
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-subj", "/CN=legacy", "-days", "1"},
		{"pkcs12", "-export", "-legacy", "-inkey", "k.pem", "-in", "c.pem", "-passout", "pass:p4ss", "-out", "l.p12"},
		{"pkcs12", "-export", "-legacy", "-inkey", "k.pem", "-in", "c.pem", "-passout", "pass:", "-out", "empty.p12"},
	} {
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	for _, tc := range []struct{ file, pass string }{{"l.p12", "p4ss"}, {"empty.p12", ""}} {
		der, err := os.ReadFile(filepath.Join(dir, tc.file))
		require.NoError(t, err)
		f, err := scanPKCS12(der, tc.pass)
		require.NoError(t, err)
		require.True(t, f.contents[0].legacy, "openssl writes the encrypted certificates first")
		d, _ := testDeriver(context.Background())
		out, libPass, libDerivations, err := f.open(d, tc.pass)
		require.NoError(t, err)
		require.Equal(t, 2, libDerivations, "the RC2 content and the 3DES key")
		require.LessOrEqual(t, d.n, 2, "the MAC, under one or both spellings of the empty passphrase")
		in := inspectLibraryInput(t, out)
		require.Equal(t, libraryInput{mac: 1, encryptedContents: 1, shroudedBags: 1}, in)
		lf, err := scanPKCS12(out, libPass)
		require.NoError(t, err)
		require.False(t, lf.contents[0].encrypted, "the key's content comes first")
		require.Equal(t, 1, lf.macIterations)
		_, cert, _, err := pkcs12.DecodeChain(out, libPass)
		require.NoError(t, err, "the library accepts the rewritten file and its MAC")
		require.Equal(t, "CN=legacy", cert.Subject.String())

		d, _ = testDeriver(context.Background())
		certs, _, err := decodePKCS12(d, der, tc.pass)
		require.NoError(t, err)
		require.Equal(t, "CN=legacy", certs[0].Subject.String())
		require.LessOrEqual(t, d.n, 4)

		d, budget := testDeriver(context.Background())
		_, _, err = decodePKCS12(d, der, "wrong")
		var pe *p12Error
		require.ErrorAs(t, err, &pe)
		require.True(t, pe.onPass)
		require.Equal(t, 1, d.n, "the MAC only")
		require.Equal(t, 1, budget.count())
	}
}

// TestDeriverCap: one input runs at most MaxDerivations derivations.
func TestDeriverCap(t *testing.T) {
	t.Parallel()
	d, _ := testDeriver(context.Background())
	for range MaxDerivations {
		require.NoError(t, d.run(1, 1, func() error { return nil }))
	}
	require.ErrorIs(t, d.run(1, 1, func() error { t.Fatal("ran past the cap"); return nil }), errOverLimit)
}
