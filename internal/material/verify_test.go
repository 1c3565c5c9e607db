package material_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

func inspectOK(t *testing.T, k material.Kind, cert, key []byte) *material.Material {
	t.Helper()
	m, errs := material.Inspect(k, cert, key, material.PEMFields, time.Now())
	require.Empty(t, errs)
	return m
}

// TestVerifyWithReasons: VerifyWith names the path when a pair chains to a bundle, and why
// not when it does not.
func TestVerifyWithReasons(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root, inter, leaf := mt.NewChain(t, mt.Options{CommonName: "edge", DNSNames: []string{"edge.example.com"}})
	other := mt.NewCA(t, mt.Options{CommonName: "Other Root"})
	oldInter := root.Issue(t, mt.Options{IsCA: true, CommonName: "Old Intermediate", NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)})
	underOld := oldInter.Issue(t, mt.Options{CommonName: "stale", DNSNames: []string{"stale.example.com"}})
	bundle := inspectOK(t, material.CABundle, root.CertPEM(), nil)

	v := material.VerifyWith(inspectOK(t, material.ClientPair, leaf.ChainPEM(), leaf.KeyPEM()), bundle, now)
	require.True(t, v.Chains, "%+v", v)
	require.Equal(t, []string{leaf.Cert.Subject.String(), inter.Cert.Subject.String(), root.Cert.Subject.String()}, v.Path)

	v = material.VerifyWith(inspectOK(t, material.ClientPair, leaf.ChainPEM(), leaf.KeyPEM()), inspectOK(t, material.CABundle, other.CertPEM(), nil), now)
	require.False(t, v.Chains)
	require.Equal(t, material.ReasonUnknownAuthority, v.Reason)
	require.Contains(t, v.Message, root.Cert.Subject.String())

	v = material.VerifyWith(inspectOK(t, material.ClientPair, underOld.ChainPEM(), underOld.KeyPEM()), bundle, now)
	require.False(t, v.Chains)
	require.Equal(t, material.ReasonExpired, v.Reason, "%+v", v)
	require.Contains(t, v.Message, "Old Intermediate")

	// Name constraints, made by openssl: the issuing CA may only vouch for allowed.example.com.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("this test needs the openssl command: %v", err)
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"}
	run(append([]string{"req", "-x509"}, append(ec, "-keyout", "r.key", "-out", "r.crt", "-subj", "/CN=NC Root", "-days", "1",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")...)...)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "i.ext"), []byte("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nnameConstraints=critical,permitted;DNS:allowed.example.com\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "l.ext"), []byte("subjectAltName=DNS:denied.example.com\n"), 0o600))
	run(append([]string{"req", "-new"}, append(ec, "-keyout", "i.key", "-out", "i.csr", "-subj", "/CN=NC Issuing")...)...)
	run("x509", "-req", "-in", "i.csr", "-CA", "r.crt", "-CAkey", "r.key", "-CAcreateserial", "-CAserial", "s.srl", "-out", "i.crt", "-days", "1", "-extfile", "i.ext")
	run(append([]string{"req", "-new"}, append(ec, "-keyout", "l.key", "-out", "l.csr", "-subj", "/CN=denied")...)...)
	run("x509", "-req", "-in", "l.csr", "-CA", "i.crt", "-CAkey", "i.key", "-CAserial", "s.srl", "-out", "l.crt", "-days", "1", "-extfile", "l.ext")
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		require.NoError(t, err)
		return b
	}
	pair := inspectOK(t, material.ClientPair, append(read("l.crt"), read("i.crt")...), read("l.key"))
	v = material.VerifyWith(pair, inspectOK(t, material.CABundle, read("r.crt"), nil), time.Now().Add(time.Minute))
	require.False(t, v.Chains)
	require.Equal(t, material.ReasonNameConstraints, v.Reason, "%+v", v)
	require.Contains(t, v.Message, "denied.example.com")
}
