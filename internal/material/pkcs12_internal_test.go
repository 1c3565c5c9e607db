package material

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"
)

// TestLegacyPKCS12KeyFirst: openssl -legacy writes the RC2-encrypted certificates before
// the key bag; the scan hands the library the same file with the key bag first and a MAC
// computed again, which the library accepts, while a wrong passphrase is caught by the
// scan's own MAC check.
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
		keys, out, err := scanPKCS12(der, tc.pass)
		require.NoError(t, err)
		require.Equal(t, 1, keys)
		require.False(t, bytes.Equal(der, out), "the contents were reordered")
		_, cert, _, err := pkcs12.DecodeChain(out, tc.pass)
		require.NoError(t, err, "the library accepts the rewritten file and its MAC")
		require.Equal(t, "CN=legacy", cert.Subject.String())

		_, _, err = scanPKCS12(der, "wrong")
		var pe *p12Error
		require.ErrorAs(t, err, &pe)
		require.True(t, pe.onPass)
	}
}
