package credfile

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/secret"
)

func sampleDoc(t testing.TB, tenant string, gen int64) *Document {
	cert, key := materialtest.Pair(t, materialtest.Options{CommonName: "edge"})
	return &Document{
		Tenant: tenant, Generation: gen,
		Entries: []Entry{{ID: "edge", Name: "Edge", Type: "client-pair", Source: "inline",
			CertPEM: string(cert), KeyPEM: string(key), Metadata: material.Metadata{DNSNames: []string{}}}},
		Workspace:       json.RawMessage(`{"flows":[]}`),
		References:      []Reference{{EntryID: "edge", FlowID: "f", NodeID: "n", NodeType: "tcp-out", Field: "tls.clientCertRef"}},
		NodeCredentials: []NodeCredential{{NodeID: "n", Name: "password", Value: "hunter2"}},
	}
}

// TestVersion1FileDecryptsWithOnlyTheFileAndTheKey follows the version 1 section of
// docs/credentials-format.md step by step with nothing but the standard library, the file
// and loopze.key: files written before tenant keys still open.
func TestVersion1FileDecryptsWithOnlyTheFileAndTheKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ring, err := envelope.Load(dir, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	want := sampleDoc(t, "acme", 42)
	data := sealV1(t, ring, want)
	doc, _, err := Open(Keys{Ring: ring}, data, "acme")
	require.NoError(t, err)
	require.Equal(t, want.Entries[0].KeyPEM, doc.Entries[0].KeyPEM)
	require.NoError(t, os.MkdirAll(filepath.Dir(Path(dir, "acme")), 0o700))
	require.NoError(t, os.WriteFile(Path(dir, "acme"), data, 0o600))

	// 1. The key: base64 of 32 bytes; its ID is the hex of the first 8 bytes of its SHA-256.
	keyText, err := os.ReadFile(filepath.Join(dir, "loopze.key"))
	require.NoError(t, err)
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(keyText)))
	require.NoError(t, err)
	require.Len(t, key, 32)
	sum := sha256.Sum256(key)

	// 2. The file: JSON with the header fields and the base64 ciphertext.
	raw, err := os.ReadFile(filepath.Join(dir, "tenants", "acme", "credentials.json"))
	require.NoError(t, err)
	var f struct {
		Format     string `json:"format"`
		Version    int    `json:"version"`
		Tenant     string `json:"tenant"`
		Generation int64  `json:"generation"`
		KeyID      string `json:"keyId"`
		Cipher     string `json:"cipher"`
		Ciphertext string `json:"ciphertext"`
	}
	require.NoError(t, json.Unmarshal(raw, &f))
	require.Equal(t, "loopze-credentials", f.Format)
	require.Equal(t, 1, f.Version)
	require.Equal(t, "AES-256-GCM", f.Cipher)
	require.Equal(t, hex.EncodeToString(sum[:8]), f.KeyID)

	// 3. The AAD: label, version byte, raw key ID, then the header bytes.
	rawKeyID, err := hex.DecodeString(f.KeyID)
	require.NoError(t, err)
	aad := []byte("loopze/envelope/v1/file\x00\x01")
	aad = append(aad, rawKeyID...)
	aad = append(aad, "loopze-credentials/v1\x00"+f.Tenant+"\x00"+strconv.FormatInt(f.Generation, 10)...)

	// 4. AES-256-GCM: a 12-byte nonce, then ciphertext and a 16-byte tag.
	sealed, err := base64.StdEncoding.DecodeString(f.Ciphertext)
	require.NoError(t, err)
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	gcm, err := cipher.NewGCM(block)
	require.NoError(t, err)
	plain, err := gcm.Open(nil, sealed[:12], sealed[12:], aad)
	require.NoError(t, err)

	var got struct {
		Tenant     string `json:"tenant"`
		Generation int64  `json:"generation"`
		Entries    []struct {
			ID, CertPem, KeyPem string
		} `json:"entries"`
		NodeCredentials []struct{ NodeID, Name, Value string } `json:"nodeCredentials"`
		References      []struct{ EntryID, Field string }      `json:"references"`
		Workspace       json.RawMessage                        `json:"workspace"`
	}
	require.NoError(t, json.Unmarshal(plain, &got))
	require.Equal(t, "acme", got.Tenant)
	require.EqualValues(t, 42, got.Generation)
	require.Equal(t, want.Entries[0].CertPEM, got.Entries[0].CertPem)
	require.Equal(t, want.Entries[0].KeyPEM, got.Entries[0].KeyPem)
	require.Equal(t, "hunter2", got.NodeCredentials[0].Value)
	require.Equal(t, "tls.clientCertRef", got.References[0].Field)
	require.JSONEq(t, `{"flows":[]}`, string(got.Workspace))

	// The clear part of the file carries no material.
	requireNoPEM(t, string(raw))
	require.NotContains(t, string(raw), "hunter2")
}

// TestFileDecryptsWithOnlyTheFileAndTheKey follows docs/credentials-format.md step by step
// with nothing but the standard library (and HKDF from it), the file and loopze.key.
func TestFileDecryptsWithOnlyTheFileAndTheKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ring, err := envelope.Load(dir, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	master, err := envelope.ReadKeyFile(filepath.Join(dir, "loopze.key"))
	require.NoError(t, err)
	root := make([]byte, 32)
	root[0] = 7
	want := sampleDoc(t, "acme", 42)
	data, _, err := Seal(fileKeyFor(t, master, root, "acme", 3), want)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(Path(dir, "acme")), 0o700))
	require.NoError(t, os.WriteFile(Path(dir, "acme"), data, 0o600))
	_, _, err = Open(Keys{Ring: ring}, data, "acme")
	require.NoError(t, err)

	// 1. The master key: base64 of 32 bytes; its ID is the hex of the first 8 bytes of its SHA-256.
	keyText, err := os.ReadFile(filepath.Join(dir, "loopze.key"))
	require.NoError(t, err)
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(keyText)))
	require.NoError(t, err)
	require.Len(t, key, 32)
	sum := sha256.Sum256(key)

	// 2. The file: JSON with the header fields and the base64 ciphertext.
	raw, err := os.ReadFile(filepath.Join(dir, "tenants", "acme", "credentials.json"))
	require.NoError(t, err)
	var f struct {
		Format     string `json:"format"`
		Version    int    `json:"version"`
		Tenant     string `json:"tenant"`
		Generation int64  `json:"generation"`
		KeyID      string `json:"keyId"`
		TenantKey  struct {
			Version     int    `json:"version"`
			MasterKeyID string `json:"masterKeyId"`
			Wrapped     string `json:"wrapped"`
		} `json:"tenantKey"`
		Cipher     string `json:"cipher"`
		Ciphertext string `json:"ciphertext"`
	}
	require.NoError(t, json.Unmarshal(raw, &f))
	require.Equal(t, "loopze-credentials", f.Format)
	require.Equal(t, 2, f.Version)
	require.Equal(t, "AES-256-GCM", f.Cipher)
	require.Equal(t, hex.EncodeToString(sum[:8]), f.TenantKey.MasterKeyID)

	// 3. The tenant key: AES-256-GCM under the master key, a 12-byte IV first and the tag
	// last, bound to "loopze/masterkey/v1/wrap", NUL, "loopze/tenant-key/v1", NUL, tenant,
	// NUL, version.
	gcmOf := func(k []byte) cipher.AEAD {
		block, err := aes.NewCipher(k)
		require.NoError(t, err)
		g, err := cipher.NewGCM(block)
		require.NoError(t, err)
		return g
	}
	wrapped, err := base64.StdEncoding.DecodeString(f.TenantKey.Wrapped)
	require.NoError(t, err)
	tk, err := gcmOf(key).Open(nil, wrapped[:12], wrapped[12:],
		[]byte("loopze/masterkey/v1/wrap\x00loopze/tenant-key/v1\x00"+f.Tenant+"\x00"+strconv.Itoa(f.TenantKey.Version)))
	require.NoError(t, err)

	// 4. The file key: HKDF-SHA-256 of the tenant key, no salt, info
	// "loopze/tenant-key/v1/file", NUL, tenant, NUL, version; keyId is its ID.
	fk, err := hkdf.Key(sha256.New, tk, nil, "loopze/tenant-key/v1/file\x00"+f.Tenant+"\x00"+strconv.Itoa(f.TenantKey.Version), 32)
	require.NoError(t, err)
	fsum := sha256.Sum256(fk)
	require.Equal(t, hex.EncodeToString(fsum[:8]), f.KeyID)

	// 5. The AAD: every header field, NUL separated.
	aad := "loopze-credentials/v2\x00" + f.Tenant + "\x00" + strconv.FormatInt(f.Generation, 10) + "\x00" + f.KeyID +
		"\x00" + strconv.Itoa(f.TenantKey.Version) + "\x00" + f.TenantKey.MasterKeyID + "\x00" + f.TenantKey.Wrapped

	// 6. AES-256-GCM under the file key: a 12-byte nonce, then ciphertext and a 16-byte tag.
	sealed, err := base64.StdEncoding.DecodeString(f.Ciphertext)
	require.NoError(t, err)
	plain, err := gcmOf(fk).Open(nil, sealed[:12], sealed[12:], []byte(aad))
	require.NoError(t, err)

	var got struct {
		Tenant     string `json:"tenant"`
		Generation int64  `json:"generation"`
		Entries    []struct {
			ID, CertPem, KeyPem string
		} `json:"entries"`
		NodeCredentials []struct{ NodeID, Name, Value string } `json:"nodeCredentials"`
	}
	require.NoError(t, json.Unmarshal(plain, &got))
	require.Equal(t, "acme", got.Tenant)
	require.EqualValues(t, 42, got.Generation)
	require.Equal(t, want.Entries[0].KeyPEM, got.Entries[0].KeyPem)
	require.Equal(t, "hunter2", got.NodeCredentials[0].Value)
	requireNoPEM(t, string(raw))
	require.NotContains(t, string(raw), "hunter2")
}

func TestOpenRefusesAlteredFiles(t *testing.T) {
	t.Parallel()
	master := make([]byte, 32)
	ring, err := envelope.NewRing(master)
	require.NoError(t, err)
	root := append(make([]byte, 31), 9)
	data, h, err := Seal(fileKeyFor(t, master, root, "acme", 1), sampleDoc(t, "acme", 3))
	require.NoError(t, err)
	other, err := envelope.NewRing(append(make([]byte, 31), 1))
	require.NoError(t, err)
	v1 := sealV1(t, ring, sampleDoc(t, "acme", 3))

	edit := func(data []byte, fn func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(data, &m))
		fn(m)
		out, err := json.Marshal(m)
		require.NoError(t, err)
		return out
	}
	flipped := func(m map[string]any) {
		b, _ := base64.StdEncoding.DecodeString(m["ciphertext"].(string))
		b[len(b)/2] ^= 1
		m["ciphertext"] = base64.StdEncoding.EncodeToString(b)
	}
	tk := func(fn func(tk map[string]any)) func(m map[string]any) {
		return func(m map[string]any) { fn(m["tenantKey"].(map[string]any)) }
	}
	cases := []struct {
		name string
		data []byte
		ring *envelope.Ring
		want error
	}{
		{"generation changed", edit(data, func(m map[string]any) { m["generation"] = 4 }), ring, envelope.ErrDecrypt},
		{"generation rolled back", edit(data, func(m map[string]any) { m["generation"] = 2 }), ring, envelope.ErrDecrypt},
		{"ciphertext flipped", edit(data, flipped), ring, envelope.ErrDecrypt},
		{"key ID of another key", edit(data, func(m map[string]any) { m["keyId"] = other.CurrentKeyID() }), ring, envelope.ErrUnknownKey},
		{"tenant key version changed", edit(data, tk(func(k map[string]any) { k["version"] = 2 })), ring, envelope.ErrKeyUnwrap},
		{"master key of another", edit(data, tk(func(k map[string]any) { k["masterKeyId"] = other.CurrentKeyID() })), ring, envelope.ErrUnknownKey},
		{"wrapped key not base64", edit(data, tk(func(k map[string]any) { k["wrapped"] = "%%%" })), ring, ErrNotCredentialsFile},
		{"no tenant key", edit(data, func(m map[string]any) { delete(m, "tenantKey") }), ring, ErrNotCredentialsFile},
		{"other master key", data, other, envelope.ErrUnknownKey},
		{"no key at all", data, nil, envelope.ErrUnknownKey},
		{"tenant changed", edit(data, func(m map[string]any) { m["tenant"] = "other" }), ring, ErrWrongTenant},
		{"unknown version", edit(data, func(m map[string]any) { m["version"] = 3 }), ring, ErrNotCredentialsFile},
		{"not a credentials file", []byte(`{"hello":"world"}`), ring, ErrNotCredentialsFile},
		{"truncated", data[:len(data)/2], ring, ErrNotCredentialsFile},
		{"ciphertext not base64", edit(data, func(m map[string]any) { m["ciphertext"] = "%%%" }), ring, ErrNotCredentialsFile},
		{"ciphertext too short", edit(data, func(m map[string]any) { m["ciphertext"] = "AAAA" }), ring, envelope.ErrMalformed},
		{"version 1: generation changed", edit(v1, func(m map[string]any) { m["generation"] = 4 }), ring, envelope.ErrDecrypt},
		{"version 1: other master key", v1, other, envelope.ErrUnknownKey},
		{"version 1: key ID not hex", edit(v1, func(m map[string]any) { m["keyId"] = "zz" }), ring, envelope.ErrMalformed},
		{"version 1 without a master key", v1, nil, envelope.ErrUnknownKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := Open(Keys{Ring: tc.ring}, tc.data, "acme")
			require.ErrorIs(t, err, tc.want)
		})
	}
	doc, got, err := Open(Keys{Ring: ring}, data, "acme")
	require.NoError(t, err)
	require.Equal(t, h, got)
	require.Equal(t, "hunter2", doc.NodeCredentials[0].Value)
	_, _, err = Open(Keys{Ring: ring}, v1, "acme")
	require.NoError(t, err)
}

// TestRuntimeKeyOpensItsTenantOnly: a runtime key opens its tenant's files under the
// versions it holds and nothing else, says which version a file needs when it lacks it,
// and never prints a key.
func TestRuntimeKeyOpensItsTenantOnly(t *testing.T) {
	t.Parallel()
	master := make([]byte, 32)
	rootA1, rootA2, rootB := append(make([]byte, 31), 1), append(make([]byte, 31), 2), append(make([]byte, 31), 3)
	a1, a2 := fileKeyFor(t, master, rootA1, "acme", 1), fileKeyFor(t, master, rootA2, "acme", 2)
	b1 := fileKeyFor(t, master, rootB, "beta", 1)
	fileA1, _, err := Seal(a1, sampleDoc(t, "acme", 1))
	require.NoError(t, err)
	fileA2, _, err := Seal(a2, sampleDoc(t, "acme", 2))
	require.NoError(t, err)
	fileB, _, err := Seal(b1, sampleDoc(t, "beta", 1))
	require.NoError(t, err)

	rk := &RuntimeKey{Tenant: "acme", Keys: map[int]secret.Bytes{1: a1.Key}}
	text, err := rk.Marshal()
	require.NoError(t, err)
	require.True(t, IsRuntimeKey(text))
	parsed, err := ParseRuntimeKey(text)
	require.NoError(t, err)
	keys := Keys{FileKey: parsed.FileKey}

	doc, _, err := Open(keys, fileA1, "acme")
	require.NoError(t, err)
	require.Equal(t, "hunter2", doc.NodeCredentials[0].Value)
	_, _, err = Open(keys, fileB, "")
	require.ErrorIs(t, err, ErrWrongTenant, "another tenant's file")
	_, _, err = Open(keys, fileA2, "acme")
	require.ErrorIs(t, err, envelope.ErrUnknownKey, "a version the key does not hold")
	require.ErrorContains(t, err, "version 2 of acme's key")
	require.ErrorContains(t, err, "holds version(s) 1")

	for _, s := range []string{fmt.Sprint(parsed), fmt.Sprintf("%+v", parsed), fmt.Sprintf("%#v", parsed)} {
		require.NotContains(t, s, base64.StdEncoding.EncodeToString(a1.Key))
	}
	for _, bad := range []string{`{}`, `{"format":"loopze-runtime-key","version":1,"tenant":"acme","keys":[{"tenantKeyVersion":1,"keyId":"00","key":"AAAA"}]}`, `not json`} {
		_, err := ParseRuntimeKey([]byte(bad))
		require.ErrorIs(t, err, ErrNotRuntimeKey, bad)
	}
}

func TestDocumentPrintsNoMaterial(t *testing.T) {
	t.Parallel()
	doc := sampleDoc(t, "acme", 1)
	for _, s := range []string{
		fmt.Sprint(doc), fmt.Sprintf("%+v", doc), fmt.Sprintf("%#v", doc), fmt.Sprintf("%v", *doc),
		fmt.Sprintf("%v", doc.Entries), fmt.Sprintf("%+v", doc.NodeCredentials),
	} {
		requireNoPEM(t, s)
		require.NotContains(t, s, "hunter2")
	}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "doc", doc, "entry", doc.Entries[0], "cred", doc.NodeCredentials[0])
	requireNoPEM(t, buf.String())
	require.NotContains(t, buf.String(), "hunter2")
}

func TestNodeCredentialKeepsBinaryValues(t *testing.T) {
	t.Parallel()
	for _, v := range [][]byte{[]byte("plain text"), {0xff, 0x00, 0xfe}, {}} {
		c := NewNodeCredential("n", "k", v)
		got, err := c.Bytes()
		require.NoError(t, err)
		require.Equal(t, string(v), string(got))
	}
	_, err := NodeCredential{Value: "x", Encoding: "rot13"}.Bytes()
	require.Error(t, err)
}

func TestPath(t *testing.T) {
	t.Parallel()
	require.Equal(t, filepath.Join("d", "credentials.json"), Path("d", "default"))
	require.Equal(t, filepath.Join("d", "tenants", "acme", "credentials.json"), Path("d", "acme"))
}

func FuzzOpen(f *testing.F) {
	ring, err := envelope.NewRing(make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	data, _, err := Seal(fileKeyFor(f, make([]byte, 32), append(make([]byte, 31), 5), "acme", 1), &Document{Tenant: "acme", Generation: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(sealV1(f, ring, &Document{Tenant: "acme", Generation: 1}))
	f.Add([]byte(`{"format":"loopze-credentials","version":1,"tenant":"a","generation":1,"keyId":"00","ciphertext":""}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseHeader(b)
		doc, _, err := Open(Keys{Ring: ring}, b, "")
		if err == nil && doc == nil {
			t.Fatal("no error and no document")
		}
		if err != nil && strings.Contains(err.Error(), "-----BEGIN") {
			t.Fatal("error quotes PEM")
		}
	})
}

// TestEncodeFileMatchesEncodingJSON: the hand-built file is byte for byte what
// encoding/json would write.
func TestEncodeFileMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	h := Header{Format: Format, Version: Version, Tenant: "acme", Generation: 42, KeyID: "0123456789abcdef", Cipher: Cipher,
		TenantKey: &TenantKeyRef{Version: 1, MasterKeyID: "fedcba9876543210", Wrapped: "AAAA"}}
	for _, n := range []int{0, 1, 2, 3, 100, 4099} {
		sealed := make([]byte, n)
		for i := range sealed {
			sealed[i] = byte(i*7 + 3)
		}
		want, err := json.MarshalIndent(file{Header: h, Ciphertext: base64.StdEncoding.EncodeToString(sealed)}, "", "  ")
		require.NoError(t, err)
		got, err := encodeFile(h, sealed)
		require.NoError(t, err)
		require.Equal(t, string(want)+"\n", string(got), n)
	}
}

// TestParseHeaderCopiesNoCiphertext: reading the header of a large file allocates a few
// small strings, not copies of the megabytes of ciphertext behind it.
func TestParseHeaderCopiesNoCiphertext(t *testing.T) {
	h := Header{Format: Format, Version: Version, Tenant: "acme", Generation: 42, KeyID: "0123456789abcdef", Cipher: Cipher,
		TenantKey: &TenantKeyRef{Version: 1, MasterKeyID: "fedcba9876543210", Wrapped: "AAAA"}}
	data, err := encodeFile(h, make([]byte, 4<<20))
	require.NoError(t, err)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got, err := ParseHeader(data)
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.Equal(t, h, got)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10), "bytes allocated to parse a 5.6 MB file's header")

	_, err = ParseHeader(append(data[:len(data)-3:len(data)-3], []byte(`, "x": }`)...))
	require.ErrorIs(t, err, ErrNotCredentialsFile)
}

// TestReadHeaderStopsAtTheCiphertext: the header comes from the first bytes of a file of
// megabytes; a reader that fails past them is never reached. A file that is not one, or
// whose header fields come after the ciphertext, is refused.
func TestReadHeaderStopsAtTheCiphertext(t *testing.T) {
	h := Header{Format: Format, Version: Version, Tenant: "acme", Generation: 42, KeyID: "0123456789abcdef", Cipher: Cipher,
		TenantKey: &TenantKeyRef{Version: 1, MasterKeyID: "fedcba9876543210", Wrapped: "AAAA"}}
	data, err := encodeFile(h, make([]byte, 4<<20))
	require.NoError(t, err)
	r := &failPast{data: data, limit: 8 << 10}
	got, err := ReadHeader(r)
	require.NoError(t, err)
	require.Equal(t, h, got)
	require.LessOrEqual(t, r.read, 8<<10)

	for name, bad := range map[string]string{
		"not JSON":             "ciphertext",
		"an array":             `[1, 2]`,
		"ciphertext first":     `{"ciphertext": "AAAA", "format": "loopze-credentials", "version": 1}`,
		"truncated header":     `{"format": "loopze-credentials", "version": `,
		"another format":       `{"format": "x", "version": 1, "tenant": "acme", "generation": 1, "keyId": "k", "ciphertext": ""}`,
		"a number for the key": `{"format": "loopze-credentials", 7: 1}`,
	} {
		_, err := ReadHeader(strings.NewReader(bad))
		require.ErrorIs(t, err, ErrNotCredentialsFile, name)
	}
}

// failPast is a reader of data that fails once more than limit bytes have been read.
type failPast struct {
	data        []byte
	limit, read int
}

func (f *failPast) Read(p []byte) (int, error) {
	if f.read >= f.limit {
		return 0, errors.New("read past the header")
	}
	n := copy(p, f.data[f.read:min(len(f.data), f.limit)])
	f.read += n
	return n, nil
}

func requireNoPEM(t *testing.T, s string) {
	t.Helper()
	require.False(t, secret.LooksLikePEM(s), "PEM leaked into %q", s)
}
