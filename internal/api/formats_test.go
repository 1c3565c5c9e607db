package api_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/resolver"
)

// The material of these tests is made by the openssl command line, not by this project's
// Go code: what operators bring is what the real tools write.

const opensslPass = "Tr0ub4dor&3-openssl-pass"

// osl runs openssl in dir and returns its standard output.
func osl(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "openssl %s: %s", strings.Join(args, " "), stderr.String())
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// opensslPKI is a root, an issuing CA and leaves made by openssl in dir.
type opensslPKI struct {
	dir  string
	root *x509.Certificate
}

func newOpensslPKI(t *testing.T) *opensslPKI {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("these tests need the openssl command: %v", err)
	}
	dir := t.TempDir()
	p := &opensslPKI{dir: dir}
	write := func(name, s string) { require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600)) }
	write("ca.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
	osl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key",
		"-out", "root.crt", "-subj", "/CN=OpenSSL Root CA", "-days", "3", "-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign")
	osl(t, dir, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "int.key",
		"-out", "int.csr", "-subj", "/CN=OpenSSL Issuing CA")
	osl(t, dir, "x509", "-req", "-in", "int.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
		"-CAserial", "ca.srl", "-out", "int.crt", "-days", "2", "-extfile", "ca.ext")
	blk, _ := pem.Decode(readFile(t, filepath.Join(dir, "root.crt")))
	root, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	p.root = root
	return p
}

// leaf issues a client certificate name.crt for the key name.key (made with keyArgs, or
// already there when keyArgs is nil), signed by the issuing CA, and returns the path of
// the certificate and openssl's SHA-256 fingerprint of it.
func (p *opensslPKI) leaf(t *testing.T, name string, keyArgs ...string) (string, string) {
	t.Helper()
	if keyArgs != nil {
		osl(t, p.dir, keyArgs...)
	}
	ext := name + ".ext"
	require.NoError(t, os.WriteFile(filepath.Join(p.dir, ext), []byte(
		"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:"+name+".example.com\n"), 0o600))
	osl(t, p.dir, "req", "-new", "-key", name+".key", "-passin", "pass:"+opensslPass, "-out", name+".csr", "-subj", "/CN="+name)
	osl(t, p.dir, "x509", "-req", "-in", name+".csr", "-CA", "int.crt", "-CAkey", "int.key", "-CAserial", "ca.srl",
		"-out", name+".crt", "-days", "1", "-extfile", ext)
	fp := strings.TrimSpace(string(osl(t, p.dir, "x509", "-noout", "-fingerprint", "-sha256", "-in", name+".crt")))
	_, fp, ok := strings.Cut(fp, "=")
	require.True(t, ok)
	return filepath.Join(p.dir, name+".crt"), fp
}

func (p *opensslPKI) path(name string) string { return filepath.Join(p.dir, name) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// formatsEnv is a tenant whose peer server trusts client certificates of the openssl root.
func formatsEnv(t *testing.T, pki *opensslPKI) *tlsEnv {
	t.Helper()
	env := apitest.New(t, tempRoots())
	te := &tlsEnv{env: env, tok: env.Token(t, "acme", "editor"), ca: materialtest.NewCA(t, materialtest.Options{})}
	post(t, env, te.tok, inlineCA("root-ca", te.ca))
	te.addr = peerServer(t, te.ca, pki.root)
	return te
}

// TestOpensslFormatsAreAccepted: every shape openssl writes is accepted, shows openssl's
// fingerprint, is presented at a real handshake through the resolver, and its passphrase
// shows in no response, log line, database dump or export file.
func TestOpensslFormatsAreAccepted(t *testing.T) {
	t.Parallel()
	pki := newOpensslPKI(t)
	te := formatsEnv(t, pki)
	chain := func(leaf string) string {
		return string(readFile(t, leaf)) + string(readFile(t, pki.path("int.crt")))
	}
	ecKey := func(name string) []string {
		return []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name + ".key"}
	}

	type tc struct {
		name string
		body func(t *testing.T) (obj, string)
		// warn is a fragment of a warning the save must carry.
		warn string
	}
	cases := []tc{
		{"pkcs12 modern", func(t *testing.T) (obj, string) {
			crt, fp := pki.leaf(t, "p12", ecKey("p12")...)
			osl(t, pki.dir, "pkcs12", "-export", "-inkey", "p12.key", "-in", crt, "-certfile", pki.path("int.crt"),
				"-passout", "pass:"+opensslPass, "-out", "p12.p12")
			return obj{"pkcs12": b64(readFile(t, pki.path("p12.p12"))), "passphrase": opensslPass}, fp
		}, ""},
		{"pkcs12 legacy RC2 and 3DES", func(t *testing.T) (obj, string) {
			crt, fp := pki.leaf(t, "legacyp12", "genrsa", "-out", "legacyp12.key", "2048")
			osl(t, pki.dir, "pkcs12", "-export", "-legacy", "-inkey", "legacyp12.key", "-in", crt, "-certfile", pki.path("int.crt"),
				"-passout", "pass:"+opensslPass, "-out", "legacy.p12")
			der := readFile(t, pki.path("legacy.p12"))
			rc2 := []byte{0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06}
			tdes := []byte{0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03}
			require.True(t, bytes.Contains(der, rc2) && bytes.Contains(der, tdes), "openssl -legacy writes RC2-40 and 3DES")
			return obj{"pkcs12": b64(readFile(t, pki.path("legacy.p12"))), "passphrase": opensslPass}, fp
		}, ""},
		{"encrypted PKCS#8 PBES2 aes-256-cbc", func(t *testing.T) (obj, string) {
			crt, fp := pki.leaf(t, "pk8", ecKey("pk8")...)
			osl(t, pki.dir, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "pk8.key", "-passout", "pass:"+opensslPass, "-out", "pk8.enc")
			return obj{"certPem": chain(crt), "keyPem": string(readFile(t, pki.path("pk8.enc"))), "keyPassphrase": opensslPass}, fp
		}, ""},
		{"encrypted PKCS#8 scrypt", func(t *testing.T) (obj, string) {
			crt, fp := pki.leaf(t, "scrypt", ecKey("scrypt")...)
			osl(t, pki.dir, "pkcs8", "-topk8", "-scrypt", "-in", "scrypt.key", "-passout", "pass:"+opensslPass, "-out", "scrypt.enc")
			return obj{"certPem": chain(crt), "keyPem": string(readFile(t, pki.path("scrypt.enc"))), "keyPassphrase": opensslPass}, fp
		}, ""},
		{"legacy OpenSSL-encrypted PEM", func(t *testing.T) (obj, string) {
			crt, fp := pki.leaf(t, "legacypem", "genrsa", "-aes256", "-traditional", "-passout", "pass:"+opensslPass, "-out", "legacypem.key", "2048")
			key := readFile(t, pki.path("legacypem.key"))
			require.Contains(t, string(key), "Proc-Type: 4,ENCRYPTED")
			return obj{"certPem": chain(crt), "keyPem": string(key), "keyPassphrase": opensslPass}, fp
		}, ""},
		{"DER certificate and key", func(t *testing.T) (obj, string) {
			crt, fp := pki.leaf(t, "der", ecKey("der")...)
			osl(t, pki.dir, "x509", "-in", crt, "-outform", "der", "-out", "der.cer")
			osl(t, pki.dir, "x509", "-in", "int.crt", "-outform", "der", "-out", "int.cer")
			osl(t, pki.dir, "pkcs8", "-topk8", "-nocrypt", "-in", "der.key", "-outform", "der", "-out", "der.pk8")
			certs := append(readFile(t, pki.path("der.cer")), readFile(t, pki.path("int.cer"))...)
			return obj{"certDer": b64(certs), "keyDer": b64(readFile(t, pki.path("der.pk8")))}, fp
		}, ""},
		{"chain written leaf-last", func(t *testing.T) (obj, string) {
			crt, fp := pki.leaf(t, "leaflast", ecKey("leaflast")...)
			pemChain := string(readFile(t, pki.path("int.crt"))) + string(readFile(t, crt))
			return obj{"certPem": pemChain, "keyPem": string(readFile(t, pki.path("leaflast.key")))}, fp
		}, "reordered leaf first"},
	}
	for i, c := range cases {
		id := "edge-" + string(rune('a'+i))
		t.Run(c.name, func(t *testing.T) {
			body, fp := c.body(t)
			body["id"], body["name"], body["type"], body["source"] = id, c.name, "client-pair", "inline"
			body["verifyWith"] = "root-ca"
			res := te.env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: te.tok, Body: body})
			require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
			var saved struct {
				FingerprintSha256 string
				CertCount         int
				HasPrivateKey     bool
				Warnings          []struct{ Location, Message string }
				Verification      struct {
					Chains bool
					Reason string
				}
			}
			res.Decode(t, &saved)
			require.Equal(t, fp, saved.FingerprintSha256)
			require.Equal(t, 2, saved.CertCount)
			require.True(t, saved.HasPrivateKey)
			// root-ca is the server side's CA, not the openssl root: it must not chain.
			require.False(t, saved.Verification.Chains)
			require.Equal(t, "unknown-authority", saved.Verification.Reason)
			if c.warn != "" {
				require.Contains(t, string(res.Body), c.warn)
			}
			for _, w := range saved.Warnings {
				require.NotContains(t, w.Message, "does not link", "%s", res.Body)
			}
			requireNoPassphrase(t, te.env, res.Body)

			// A real handshake: the node's connection init presents the stored pair.
			block := obj{"caBundleRef": "root-ca", "serverName": "localhost", "clientCertRef": id}
			dep := deploy(t, te.env, te.tok, workspaceOf(flow("line-1", node("tcp-out-1", "tcp-out", obj{"tls": block}))))
			require.Equal(t, http.StatusOK, dep.Status, "%s", dep.Body)
			require.Equal(t, fp, te.connect(t).presented(t))
		})
	}

	// The passphrase reached nothing at rest: not the database, not the export file.
	dump := testdbDump(t, te.env.DBURL)
	require.NotContains(t, string(dump), opensslPass)
	_, err := (&fileexport.Exporter{Pool: te.env.Pool, Keys: te.env.Keys, DataDir: te.env.DataDir}).ExportAll(context.Background(), true)
	require.NoError(t, err)
	raw := readFile(t, credfile.Path(te.env.DataDir, "acme"))
	require.NotContains(t, string(raw), opensslPass)
	doc, _, err := credfile.Open(te.env.Keys.Opener(), raw, "acme")
	require.NoError(t, err)
	clear, err := json.Marshal(doc.Entries)
	require.NoError(t, err)
	require.Contains(t, string(clear), "BEGIN PRIVATE KEY", "the export holds the normalised keys")
	require.NotContains(t, string(clear), "ENCRYPTED")
	require.NotContains(t, string(clear), opensslPass)
	require.NotContains(t, te.env.Logs.String(), opensslPass)
}

func requireNoPassphrase(t *testing.T, env *apitest.Env, body []byte) {
	t.Helper()
	for _, where := range []string{string(body), env.Logs.String()} {
		require.NotContains(t, where, opensslPass)
		require.NotContains(t, where, "-----BEGIN")
	}
}

// TestFileEntryPKCS12AndDER: a file entry naming a .p12 with a passphrase file, and one of
// DER files, resolve at connection init, and a rotation of the .p12 applies to the next
// connection.
func TestFileEntryPKCS12AndDER(t *testing.T) {
	t.Parallel()
	pki := newOpensslPKI(t)
	te := formatsEnv(t, pki)
	dir := t.TempDir()
	crt1, fp1 := pki.leaf(t, "f1", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "f1.key")
	crt2, fp2 := pki.leaf(t, "f2", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "f2.key")
	export := func(crt, key, out string, legacy bool) []byte {
		args := []string{"pkcs12", "-export", "-inkey", key, "-in", crt, "-certfile", pki.path("int.crt"), "-passout", "pass:" + opensslPass, "-out", out}
		if legacy {
			args = append(args, "-legacy")
		}
		osl(t, pki.dir, args...)
		return readFile(t, pki.path(out))
	}
	p12 := apitest.WriteFile(t, dir, "edge.p12", export(crt1, "f1.key", "f1.p12", false))
	pass := apitest.WriteFile(t, dir, "edge.pass", []byte(opensslPass+"\n"))
	res := te.env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: te.tok, Body: obj{
		"id": "edge-p12", "name": "p12 file", "type": "client-pair", "source": "file", "certPath": p12, "passphraseFile": pass}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"fingerprintSha256":"`+fp1+`"`)
	got := te.env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/edge-p12", Token: te.tok})
	require.Contains(t, string(got.Body), `"passphraseFile":"`+pass+`"`)
	requireNoPassphrase(t, te.env, got.Body)

	te.deployClient(t, obj{"clientCertRef": "edge-p12"})
	before := te.connect(t)
	require.Equal(t, fp1, before.presented(t))
	rotate(t, p12, export(crt2, "f2.key", "f2.p12", true))
	after := te.connect(t)
	require.Equal(t, fp2, after.presented(t))
	require.Equal(t, fp2, te.reported(t))

	// DER files.
	osl(t, pki.dir, "x509", "-in", crt1, "-outform", "der", "-out", "f1.cer")
	osl(t, pki.dir, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "f1.key", "-passout", "pass:"+opensslPass, "-outform", "der", "-out", "f1.pk8")
	derCert := apitest.WriteFile(t, dir, "edge.cer", readFile(t, pki.path("f1.cer")))
	derKey := apitest.WriteFile(t, dir, "edge.pk8", readFile(t, pki.path("f1.pk8")))
	res = te.env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: te.tok, Body: obj{
		"id": "edge-der", "name": "der files", "type": "client-pair", "source": "file", "certPath": derCert, "keyPath": derKey, "passphraseFile": pass}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"fingerprintSha256":"`+fp1+`"`)

	// Without the passphrase file the .p12 names what is missing.
	res = te.env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: te.tok, Body: obj{
		"id": "edge-nopass", "name": "p12 file", "type": "client-pair", "source": "file", "certPath": p12}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"location":"body.passphraseFile"`)
	requireNoPassphrase(t, te.env, res.Body)

	dump := testdbDump(t, te.env.DBURL)
	require.NotContains(t, string(dump), opensslPass)
	require.Contains(t, string(dump), pass, "the passphrase file's path is stored")
}

// p12Safe mirrors the PKCS#12 structures far enough to duplicate a key bag.
type p12Safe struct {
	Version  int
	AuthSafe struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
	}
	MacData asn1.RawValue `asn1:"optional"`
}

type p12CI struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

// twoKeys rewrites an openssl PFX so that its key bag appears twice (the MAC no longer
// matches; the store must refuse the file for its two keys before it gets that far).
func twoKeys(t *testing.T, der []byte) []byte {
	t.Helper()
	var pfx p12Safe
	_, err := asn1.Unmarshal(der, &pfx)
	require.NoError(t, err)
	var content []byte
	_, err = asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &content)
	require.NoError(t, err)
	var safe []p12CI
	_, err = asn1.Unmarshal(content, &safe)
	require.NoError(t, err)
	dataOID := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	done := false
	for i, ci := range safe {
		if !ci.ContentType.Equal(dataOID) {
			continue
		}
		var bags []byte
		_, err = asn1.Unmarshal(ci.Content.Bytes, &bags)
		require.NoError(t, err)
		var list []asn1.RawValue
		_, err = asn1.Unmarshal(bags, &list)
		require.NoError(t, err)
		list = append(list, list...)
		nb, err := asn1.Marshal(list)
		require.NoError(t, err)
		oct, err := asn1.Marshal(nb)
		require.NoError(t, err)
		safe[i].Content = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: oct}
		done = true
	}
	require.True(t, done, "no unencrypted safe content in the openssl PFX")
	nc, err := asn1.Marshal(safe)
	require.NoError(t, err)
	oct, err := asn1.Marshal(nc)
	require.NoError(t, err)
	pfx.AuthSafe.Content = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: oct}
	out, err := asn1.Marshal(pfx)
	require.NoError(t, err)
	return out
}

// TestBadMaterialInputs: each bad input is a 422 naming its field, never a 500, and the
// passphrase shows nowhere in the answer.
func TestBadMaterialInputs(t *testing.T) {
	t.Parallel()
	pki := newOpensslPKI(t)
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ec := []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "bad.key"}
	crt, _ := pki.leaf(t, "bad", ec...)
	certPEM := string(readFile(t, crt))
	keyPEM := string(readFile(t, pki.path("bad.key")))
	pass := "pass:" + opensslPass
	osl(t, pki.dir, "pkcs12", "-export", "-inkey", "bad.key", "-in", crt, "-passout", pass, "-out", "bad.p12")
	p12 := readFile(t, pki.path("bad.p12"))
	osl(t, pki.dir, "pkcs12", "-export", "-nokeys", "-in", crt, "-passout", pass, "-out", "nokey.p12")
	osl(t, pki.dir, "pkcs12", "-export", "-legacy", "-nokeys", "-in", crt, "-passout", pass, "-out", "legacynokey.p12")
	osl(t, pki.dir, "pkcs12", "-export", "-legacy", "-inkey", "bad.key", "-in", crt, "-passout", pass, "-out", "legacy.p12")
	osl(t, pki.dir, "pkcs12", "-export", "-keypbe", "NONE", "-certpbe", "NONE", "-nomac", "-inkey", "bad.key", "-in", crt, "-passout", "pass:", "-out", "plain.p12")
	osl(t, pki.dir, "pkcs12", "-export", "-iter", "1000001", "-inkey", "bad.key", "-in", crt, "-passout", pass, "-out", "bomb.p12")
	osl(t, pki.dir, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "bad.key", "-passout", pass, "-out", "bad.enc")
	osl(t, pki.dir, "pkcs8", "-topk8", "-v2", "camellia-256-cbc", "-in", "bad.key", "-passout", pass, "-out", "camellia.enc")
	osl(t, pki.dir, "pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES", "-in", "bad.key", "-passout", pass, "-out", "v1.enc")
	osl(t, pki.dir, "pkcs8", "-topk8", "-scrypt", "-scrypt_N", "32768", "-scrypt_r", "1", "-scrypt_p", "1", "-in", "bad.key",
		"-passout", pass, "-outform", "der", "-out", "scrypt.der")
	osl(t, pki.dir, "genrsa", "-aes256", "-traditional", "-passout", pass, "-out", "legacy.key", "2048")
	// The scrypt key with N raised from 2^15 to 2^22 (512 MiB): an scrypt bomb.
	scryptDER := readFile(t, pki.path("scrypt.der"))
	from, _ := hex.DecodeString("0203008000")
	to, _ := hex.DecodeString("0203400000")
	require.Equal(t, 1, bytes.Count(scryptDER, from))
	scryptBomb := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: bytes.Replace(scryptDER, from, to, 1)})
	huge := make([]byte, 280<<10)

	base := func(extra obj) obj {
		b := obj{"id": "bad", "name": "bad", "type": "client-pair", "source": "inline"}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}
	cases := []struct {
		name     string
		body     obj
		location string
		contains string
	}{
		{"garbage base64", base(obj{"pkcs12": "not base64 at all!"}), "body.pkcs12", "is not base64"},
		{"base64 of garbage", base(obj{"pkcs12": b64([]byte("hello, this is not a PFX")), "passphrase": opensslPass}), "body.pkcs12", "is not a DER PKCS#12"},
		{"pkcs12 without a key", base(obj{"pkcs12": b64(readFile(t, pki.path("nokey.p12"))), "passphrase": opensslPass}), "body.pkcs12", "holds no private key"},
		{"pkcs12 with two keys", base(obj{"pkcs12": b64(twoKeys(t, readFile(t, pki.path("plain.p12"))))}), "body.pkcs12", "holds 2 private keys"},
		{"legacy pkcs12 without a key", base(obj{"pkcs12": b64(readFile(t, pki.path("legacynokey.p12"))), "passphrase": opensslPass}), "body.pkcs12", "holds no private key"},
		{"legacy pkcs12 wrong passphrase", base(obj{"pkcs12": b64(readFile(t, pki.path("legacy.p12"))), "passphrase": "wrong"}), "body.passphrase", "wrong passphrase"},
		{"pkcs12 wrong passphrase", base(obj{"pkcs12": b64(p12), "passphrase": "wrong"}), "body.passphrase", "wrong passphrase"},
		{"pkcs12 missing passphrase", base(obj{"pkcs12": b64(p12)}), "body.passphrase", "protected by a passphrase"},
		{"passphrase on an unprotected pkcs12", base(obj{"pkcs12": b64(readFile(t, pki.path("plain.p12"))), "passphrase": opensslPass}), "body.passphrase", "not protected by a passphrase"},
		{"pkcs12 bomb: iterations", base(obj{"pkcs12": b64(readFile(t, pki.path("bomb.p12"))), "passphrase": opensslPass}), "body.pkcs12", "over the limit of 1000000"},
		{"pkcs12 bomb: size", base(obj{"pkcs12": b64(huge), "passphrase": opensslPass}), "body.pkcs12", "over the 256 KiB limit"},
		{"pkcs12 with certPem", base(obj{"pkcs12": b64(p12), "passphrase": opensslPass, "certPem": certPEM}), "body.certPem", "leave certPem empty"},
		{"pkcs12 for a ca-bundle", obj{"id": "bad", "name": "bad", "type": "ca-bundle", "source": "inline", "pkcs12": b64(p12), "passphrase": opensslPass}, "body.pkcs12", "a ca-bundle carries no private key"},
		{"passphrase without pkcs12", base(obj{"certPem": certPEM, "keyPem": keyPEM, "passphrase": opensslPass}), "body.passphrase", "which is not given"},
		{"keyPassphrase on an unencrypted key", base(obj{"certPem": certPEM, "keyPem": keyPEM, "keyPassphrase": opensslPass}), "body.keyPassphrase", "not encrypted"},
		{"encrypted key, missing keyPassphrase", base(obj{"certPem": certPEM, "keyPem": string(readFile(t, pki.path("bad.enc")))}), "body.keyPassphrase", "give its passphrase"},
		{"encrypted key, wrong keyPassphrase", base(obj{"certPem": certPEM, "keyPem": string(readFile(t, pki.path("bad.enc"))), "keyPassphrase": "wrong"}), "body.keyPassphrase", "wrong passphrase"},
		{"legacy key, wrong keyPassphrase", base(obj{"certPem": certPEM, "keyPem": string(readFile(t, pki.path("legacy.key"))), "keyPassphrase": "wrong"}), "body.keyPassphrase", "wrong passphrase"},
		{"legacy key, missing keyPassphrase", base(obj{"certPem": certPEM, "keyPem": string(readFile(t, pki.path("legacy.key")))}), "body.keyPassphrase", "give its passphrase"},
		{"unknown cipher", base(obj{"certPem": certPEM, "keyPem": string(readFile(t, pki.path("camellia.enc"))), "keyPassphrase": opensslPass}), "body.keyPem", "is not supported"},
		{"unknown scheme", base(obj{"certPem": certPEM, "keyPem": string(readFile(t, pki.path("v1.enc"))), "keyPassphrase": opensslPass}), "body.keyPem", "is not supported"},
		{"scrypt bomb", base(obj{"certPem": certPEM, "keyPem": string(scryptBomb), "keyPassphrase": opensslPass}), "body.keyPem", "MiB limit"},
		// N=2 keeps the table at 32 MiB while p=16 blocks of r=131072 would take 256 MiB more.
		{"scrypt bomb: blocks", base(obj{"certPem": certPEM, "keyPem": string(materialtest.ScryptParamsPEM(t, 2, 131072, 16)), "keyPassphrase": opensslPass}), "body.keyPem", "r=131072 is over the limit of 32"},
		{"certDer not base64", base(obj{"certDer": "%%%", "keyPem": keyPEM}), "body.certDer", "is not base64"},
		{"certDer holding PEM", base(obj{"certDer": b64([]byte(certPEM)), "keyPem": keyPEM}), "body.certDer", "holds PEM text"},
		{"certDer holding a PKCS#12", base(obj{"certDer": b64(p12), "keyPem": keyPEM}), "body.certDer", "holds a PKCS#12"},
		{"certPem and certDer", base(obj{"certPem": certPEM, "certDer": b64([]byte{0x30}), "keyPem": keyPEM}), "body.certDer", "not both"},
		{"keyDer garbage", base(obj{"certPem": certPEM, "keyDer": b64([]byte("junk"))}), "body.keyDer", "does not parse"},
		{"verifyWith a missing bundle", base(obj{"certPem": certPEM, "keyPem": keyPEM, "verifyWith": "nope"}), "body.verifyWith", "no entry of this tenant"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/api/v1/certs", "/api/v1/certs/validate"} {
				res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: path, Token: tok, Body: c.body})
				body := string(res.Body)
				if path == "/api/v1/certs" {
					require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", body)
				} else if res.Status == http.StatusOK {
					require.Contains(t, body, `"valid":false`)
				} else {
					require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", body)
				}
				require.Contains(t, body, `"location":"`+c.location+`"`, "%s", body)
				require.Contains(t, body, c.contains, "%s", body)
				requireNoPassphrase(t, env, res.Body)
			}
		})
	}
	require.NotContains(t, env.Logs.String(), opensslPass)
}

// TestCertificateExport: the public chain comes back as PEM or DER by Accept, never the
// key, for editors only.
func TestCertificateExport(t *testing.T) {
	t.Parallel()
	pki := newOpensslPKI(t)
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	crt, _ := pki.leaf(t, "exp", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "exp.key")
	osl(t, pki.dir, "pkcs12", "-export", "-inkey", "exp.key", "-in", crt, "-certfile", pki.path("int.crt"), "-passout", "pass:"+opensslPass, "-out", "exp.p12")
	post(t, env, tok, obj{"id": "exp", "name": "exp", "type": "client-pair", "source": "inline",
		"pkcs12": b64(readFile(t, pki.path("exp.p12"))), "passphrase": opensslPass})

	get := func(token, accept string) *apitest.Response {
		h := map[string]string{}
		if accept != "" {
			h["Accept"] = accept
		}
		return env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/exp/certificate", Token: token, Headers: h})
	}
	res := get(tok, "")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, "application/pem-certificate-chain", res.Header.Get("Content-Type"))
	require.Equal(t, 2, strings.Count(string(res.Body), "-----BEGIN CERTIFICATE-----"))
	require.NotContains(t, string(res.Body), "PRIVATE KEY")
	want := string(readFile(t, crt)) + string(readFile(t, pki.path("int.crt")))
	require.Equal(t, want, string(res.Body), "leaf first, then the chain, as openssl wrote them")

	res = get(tok, "application/pkix-cert")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, "application/pkix-cert", res.Header.Get("Content-Type"))
	osl(t, pki.dir, "x509", "-in", crt, "-outform", "der", "-out", "exp.cer")
	require.Equal(t, readFile(t, pki.path("exp.cer")), res.Body)

	require.Equal(t, http.StatusNotAcceptable, get(tok, "application/json").Status)
	require.Equal(t, http.StatusForbidden, get(env.Token(t, "acme", "viewer"), "").Status)
	require.Equal(t, http.StatusNotFound, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/nope/certificate", Token: tok}).Status)
	require.Equal(t, http.StatusNotFound, get(env.Token(t, "other", "editor"), "").Status, "tenants stay apart")
}

// TestVerifyWithAndNodeChainCheck: verifyWith says whether a pair chains to a ca-bundle of
// the catalogue, with the path or the reason, and the node TLS view says whether a node's
// client pair chains to the node's own CA bundle.
func TestVerifyWithAndNodeChainCheck(t *testing.T) {
	t.Parallel()
	pki := newOpensslPKI(t)
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	crt, _ := pki.leaf(t, "v", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "v.key")
	post(t, env, tok, obj{"id": "openssl-root", "name": "root", "type": "ca-bundle", "source": "inline", "certPem": string(readFile(t, pki.path("root.crt")))})
	other := materialtest.NewCA(t, materialtest.Options{CommonName: "Unrelated CA"})
	post(t, env, tok, inlineCA("other-root", other))
	pair := obj{"id": "v", "name": "v", "type": "client-pair", "source": "inline",
		"certPem": string(readFile(t, crt)) + string(readFile(t, pki.path("int.crt"))), "keyPem": string(readFile(t, pki.path("v.key")))}

	pair["verifyWith"] = "openssl-root"
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: pair})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	var v struct {
		Verification VerificationOutT `json:"verification"`
	}
	res.Decode(t, &v)
	require.True(t, v.Verification.Chains, "%s", res.Body)
	require.Equal(t, []string{"CN=v", "CN=OpenSSL Issuing CA", "CN=OpenSSL Root CA"}, v.Verification.Path)

	pair["verifyWith"] = "other-root"
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: pair})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	res.Decode(t, &v)
	require.False(t, v.Verification.Chains)
	require.Equal(t, "unknown-authority", v.Verification.Reason)
	require.Contains(t, v.Verification.Message, "CN=OpenSSL Root CA")

	pair["verifyWith"] = "v"
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/v", Token: tok, Body: obj{"verifyWith": "v"}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"location":"body.verifyWith"`)
	require.Contains(t, string(res.Body), "it must name a ca-bundle")
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/v", Token: tok, Body: obj{"verifyWith": "openssl-root"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"chains":true`)

	chainCheck := func(bundle string) map[string]any {
		t.Helper()
		block := obj{"caBundleRef": bundle, "clientCertRef": "v", "serverName": "localhost"}
		dep := deploy(t, env, tok, workspaceOf(flow("line-1", node("tcp-out-1", "tcp-out", obj{"tls": block}))))
		require.Equal(t, http.StatusOK, dep.Status, "%s", dep.Body)
		res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows/line-1/nodes/tcp-out-1/tls", Token: tok})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		cc, ok := res.JSON(t)["clientChain"].(map[string]any)
		require.True(t, ok, "%s", res.Body)
		return cc
	}
	cc := chainCheck("openssl-root")
	require.Equal(t, true, cc["chains"])
	cc = chainCheck("other-root")
	require.Equal(t, false, cc["chains"])
	require.Equal(t, "unknown-authority", cc["reason"])
}

// VerificationOutT is the verification of an answer, as a client reads it.
type VerificationOutT struct {
	CABundle string   `json:"caBundle"`
	Chains   bool     `json:"chains"`
	Path     []string `json:"path"`
	Reason   string   `json:"reason"`
	Message  string   `json:"message"`
}

// issue signs a certificate for a new EC key name.key with the issuing CA, with the given
// extensions and digest, and returns its PEM and key PEM.
func (p *opensslPKI) issue(t *testing.T, name, ext, digest string) (string, string) {
	t.Helper()
	osl(t, p.dir, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name+".key")
	require.NoError(t, os.WriteFile(p.path(name+".ext"), []byte(ext), 0o600))
	osl(t, p.dir, "req", "-new", "-key", name+".key", "-out", name+".csr", "-subj", "/CN="+name)
	osl(t, p.dir, "x509", "-req", "-"+digest, "-in", name+".csr", "-CA", "int.crt", "-CAkey", "int.key", "-CAserial", "ca.srl",
		"-out", name+".crt", "-days", "1", "-extfile", name+".ext")
	return string(readFile(t, p.path(name+".crt"))), string(readFile(t, p.path(name+".key")))
}

// TestExplainingChecks: material a peer would refuse is saved with a warning that says why.
func TestExplainingChecks(t *testing.T) {
	t.Parallel()
	pki := newOpensslPKI(t)
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	inter := string(readFile(t, pki.path("int.crt")))
	root := string(readFile(t, pki.path("root.crt")))
	serverOnly, serverOnlyKey := pki.issue(t, "serveronly", "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:a.example.com\n", "sha256")
	clientOnly, clientOnlyKey := pki.issue(t, "clientonly", "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:a.example.com\n", "sha256")
	noSAN, noSANKey := pki.issue(t, "nosan", "extendedKeyUsage=serverAuth\n", "sha256")
	sha1, sha1Key := pki.issue(t, "sha1", "extendedKeyUsage=clientAuth\n", "sha1")
	fine, fineKey := pki.issue(t, "fine", "extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=IP:127.0.0.1\n", "sha256")

	cases := []struct {
		name, typ, cert, key string
		warn                 string
	}{
		{"client pair without clientAuth", "client-pair", serverOnly + inter, serverOnlyKey, "extended key usage without clientAuth"},
		{"server pair without serverAuth", "server-pair", clientOnly + inter, clientOnlyKey, "extended key usage without serverAuth"},
		{"server pair without SAN", "server-pair", noSAN + inter, noSANKey, "has no DNS or IP subject alternative name"},
		{"SHA-1 signature", "client-pair", sha1 + inter, sha1Key, "CN=sha1) is signed with SHA-1"},
		{"non-CA in a CA bundle", "ca-bundle", root + fine, "", "certificate 2 (CN=fine) is not a CA certificate"},
		{"missing intermediate", "client-pair", fine + root, fineKey, "the issuer of certificate 1, CN=OpenSSL Issuing CA, is missing"},
		{"duplicate dropped", "client-pair", fine + inter + inter, fineKey, "certificate 3 (CN=OpenSSL Issuing CA) is a duplicate of certificate 2 and was dropped"},
		{"intermediates out of order", "client-pair", root + inter + fine, fineKey, "reordered leaf first, then each issuer: certificate 3 (CN=fine), then certificate 2 (CN=OpenSSL Issuing CA), then certificate 1 (CN=OpenSSL Root CA)"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := obj{"id": "check-" + string(rune('a'+i)), "name": c.name, "type": c.typ, "source": "inline", "certPem": c.cert}
			if c.key != "" {
				body["keyPem"] = c.key
			}
			res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body})
			require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
			require.Contains(t, string(res.Body), c.warn)
			require.Contains(t, string(res.Body), `"location":"body.certPem"`)
		})
	}
	// A pair with nothing wrong carries no warning.
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: obj{
		"id": "fine", "name": "fine", "type": "server-pair", "source": "inline", "certPem": fine + inter, "keyPem": fineKey}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"warnings":[]`)
	// The stored chain is in order: the export shows leaf, issuing CA, root.
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/check-h/certificate", Token: tok})
	require.Equal(t, fine+inter+root, string(res.Body))
}

// TestTornRotationOfEncryptedDERFiles: a file entry of a DER certificate and an encrypted
// DER key with a passphrase file, caught between the two renames of a rotation, is read
// again after one pause and presents the new pair.
func TestTornRotationOfEncryptedDERFiles(t *testing.T) {
	t.Parallel()
	pki := newOpensslPKI(t)
	te := formatsEnv(t, pki)
	dir := t.TempDir()
	der := func(name string) (cert, key []byte, fp string) {
		crt, fp := pki.leaf(t, name, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name+".key")
		osl(t, pki.dir, "x509", "-in", crt, "-outform", "der", "-out", name+".cer")
		osl(t, pki.dir, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", name+".key", "-passout", "pass:"+opensslPass, "-outform", "der", "-out", name+".pk8")
		osl(t, pki.dir, "x509", "-in", "int.crt", "-outform", "der", "-out", "int.cer")
		chain := append(readFile(t, pki.path(name+".cer")), readFile(t, pki.path("int.cer"))...)
		return chain, readFile(t, pki.path(name+".pk8")), fp
	}
	c1, k1, fp1 := der("torn1")
	c2, k2, fp2 := der("torn2")
	certPath := apitest.WriteFile(t, dir, "edge.cer", c1)
	keyPath := apitest.WriteFile(t, dir, "edge.pk8", k1)
	pass := apitest.WriteFile(t, dir, "edge.pass", []byte(opensslPass))
	post(t, te.env, te.tok, obj{"id": "torn", "name": "torn", "type": "client-pair", "source": "file",
		"certPath": certPath, "keyPath": keyPath, "passphraseFile": pass})
	te.deployClient(t, obj{"clientCertRef": "torn"})
	n, err := te.env.Workspace.Node(context.Background(), "acme", "line-1", "tcp-out-1")
	require.NoError(t, err)

	waits := 0
	r := &resolver.Resolver{Entries: te.env.Catalog.Entries(), Roots: te.env.Catalog.Roots, Logger: te.env.Logger, Wait: func(context.Context, time.Duration) error {
		waits++
		rotate(t, keyPath, k2)
		return nil
	}}
	cfg, err := r.BuildTLSConfig(context.Background(), "acme", n.TLS)
	require.NoError(t, err)
	require.Equal(t, fp1, dial(t, te.addr, cfg).presented(t))
	require.Zero(t, waits)

	rotate(t, certPath, c2) // the first rename only
	cfg, err = r.BuildTLSConfig(context.Background(), "acme", n.TLS)
	require.NoError(t, err)
	require.Equal(t, 1, waits)
	require.Equal(t, fp2, dial(t, te.addr, cfg).presented(t))
	require.NotContains(t, te.env.Logs.String(), opensslPass)
}
