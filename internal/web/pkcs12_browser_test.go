package web_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
)

// TestBrowserPKCS12Upload: a .p12 written by openssl goes in through the file picker with
// its passphrase; a wrong passphrase is shown on the passphrase field, the right one
// validates to openssl's fingerprint and saves, and the passphrase is in no log. DER files
// (the key encrypted, with its passphrase) go in through the certificate and key pickers.
func TestBrowserPKCS12Upload(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("this test needs the openssl command: %v", err)
	}
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	dir := t.TempDir()
	const pass = "ui-p12-passphrase-7f3a"
	sh := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "openssl %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	sh("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ui.key", "-out", "ui.crt",
		"-subj", "/CN=ui-client", "-days", "2", "-addext", "extendedKeyUsage=clientAuth")
	sh("pkcs12", "-export", "-inkey", "ui.key", "-in", "ui.crt", "-passout", "pass:"+pass, "-out", "ui.p12")
	_, wantFP, ok := strings.Cut(strings.TrimSpace(sh("x509", "-noout", "-fingerprint", "-sha256", "-in", "ui.crt")), "=")
	require.True(t, ok)
	p12 := filepath.Join(dir, "ui.p12")
	_, err := os.Stat(p12)
	require.NoError(t, err)

	b := newBrowser(t, 1280, 900)
	b.signIn(t, env.URL, admin)
	b.do(t, "open the form with a .p12 and a wrong passphrase",
		chromedp.Click(chromedp.ID("new-cert")),
		chromedp.WaitVisible(chromedp.ID("cert-form")),
		chromedp.WaitEnabled(chromedp.ID("validate")),
		chromedp.SetValue(chromedp.ID("f-id"), "ui-p12"),
		chromedp.SetValue(chromedp.ID("f-name"), "From a PFX"),
		chromedp.SetValue(chromedp.ID("f-type"), "client-pair"),
		void(chromedp.Evaluate[bool](`(document.getElementById('f-type').dispatchEvent(new Event('change')), true)`)),
		chromedp.WaitVisible(chromedp.ID("f-p12File")),
		chromedp.SetUploadFiles(chromedp.ID("f-p12File"), []string{p12}),
		chromedp.SendKeys(chromedp.ID("f-passphrase"), "not the passphrase"),
		// The browser reads the file asynchronously.
		void(chromedp.Poll[bool](`document.getElementById('f-p12File').dataset.loaded === 'ui.p12'`,
			chromedp.WithPollingTimeout(10*time.Second))),
		chromedp.Click(chromedp.ID("validate")),
		chromedp.WaitVisible(chromedp.ID("err-passphrase")),
	)
	msg := run(t, b, "passphrase error", chromedp.Text(chromedp.ID("err-passphrase")))
	require.Contains(t, msg, "wrong passphrase")

	b.do(t, "the right passphrase validates",
		void(chromedp.Evaluate[bool](`(document.getElementById('f-passphrase').value = '', true)`)),
		chromedp.SendKeys(chromedp.ID("f-passphrase"), pass),
		chromedp.Click(chromedp.ID("validate")),
		chromedp.WaitVisible(chromedp.ID("preview-fingerprint")),
	)
	require.Equal(t, wantFP, run(t, b, "preview fingerprint", chromedp.Text(chromedp.ID("preview-fingerprint"))))

	b.do(t, "create",
		chromedp.Click(chromedp.ID("save")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="ui-p12"]`)),
	)
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/ui-p12", Token: admin})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got := res.JSON(t)
	require.Equal(t, wantFP, got["fingerprintSha256"])
	require.Equal(t, true, got["hasPrivateKey"])
	html := run(t, b, "page", chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	require.NotContains(t, html, pass)

	// DER files through the certificate and key pickers, the key encrypted.
	sh("x509", "-in", "ui.crt", "-outform", "der", "-out", "ui.cer")
	sh("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "ui.key", "-passout", "pass:"+pass, "-outform", "der", "-out", "ui.pk8")
	b.do(t, "DER files through the pickers",
		chromedp.Click(chromedp.ID("new-cert")),
		chromedp.WaitVisible(chromedp.ID("cert-form")),
		chromedp.WaitEnabled(chromedp.ID("validate")),
		chromedp.SetValue(chromedp.ID("f-id"), "ui-der"),
		chromedp.SetValue(chromedp.ID("f-name"), "From DER files"),
		chromedp.SetValue(chromedp.ID("f-type"), "client-pair"),
		void(chromedp.Evaluate[bool](`(document.getElementById('f-type').dispatchEvent(new Event('change')), true)`)),
		chromedp.WaitVisible(chromedp.ID("f-keyFile")),
		chromedp.SetUploadFiles(chromedp.ID("f-certFile"), []string{filepath.Join(dir, "ui.cer")}),
		chromedp.SetUploadFiles(chromedp.ID("f-keyFile"), []string{filepath.Join(dir, "ui.pk8")}),
		chromedp.SendKeys(chromedp.ID("f-keyPassphrase"), pass),
		void(chromedp.Poll[bool](`document.getElementById('f-certFile').dataset.der === 'ui.cer' && document.getElementById('f-keyFile').dataset.der === 'ui.pk8'`,
			chromedp.WithPollingTimeout(10*time.Second))),
		chromedp.Click(chromedp.ID("validate")),
		chromedp.WaitVisible(chromedp.ID("preview-fingerprint")),
	)
	require.Equal(t, wantFP, run(t, b, "DER preview fingerprint", chromedp.Text(chromedp.ID("preview-fingerprint"))))
	b.do(t, "create from DER",
		chromedp.Click(chromedp.ID("save")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="ui-der"]`)),
	)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/ui-der", Token: admin})
	require.Equal(t, wantFP, res.JSON(t)["fingerprintSha256"])
	require.NotContains(t, env.Logs.String(), pass)
}
