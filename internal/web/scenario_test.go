package web_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// create stores an entry through the JSON API, as a script would.
func create(t *testing.T, env *apitest.Env, token string, body map[string]any) {
	t.Helper()
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: token, Body: body})
	require.Equal(t, http.StatusCreated, res.Status, "create %v: %s", body["id"], res.Body)
}

// TestBrowserCertificateLifecycle walks the seed's "Through the UI" and "Deletion safety
// net" in a real Chromium: sign in, create through the form with Validate's preview,
// edit notes, see a referenced entry's deletion blocked with its references, delete an
// unreferenced one, and sign in as a viewer who gets no create, edit or delete.
func TestBrowserCertificateLifecycle(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	viewer := env.Token(t, "default", "viewer")

	// A referenced entry: a deployed workspace uses it.
	shared := string(materialtest.NewCA(t, materialtest.Options{CommonName: "Shared Root CA"}).CertPEM())
	create(t, env, admin, map[string]any{"id": "shared-root", "name": "Shared Root CA", "type": "ca-bundle",
		"source": "inline", "certPem": shared})
	deploy(t, env, admin,
		ref{"ingest-line-1", "tcp-out-3", "tcp-out", "tls.caBundleRef", "shared-root"},
		ref{"ingest-line-2", "mqtt-broker-1", "mqtt-broker", "tls.caBundleRef", "shared-root"})

	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "UI Made Root CA"})
	certPEM := ca.CertPEM()
	wantFP := fingerprint(t, certPEM)
	pemFile := filepath.Join(t.TempDir(), "ui-root.pem")
	require.NoError(t, os.WriteFile(pemFile, certPEM, 0o600))

	b := newBrowser(t, 1280, 800)

	// Signing in from a protected page lands back on it.
	b.signIn(t, env.URL, admin)
	require.True(t, exists(t, b, "#new-cert"), "an admin sees + New certificate")
	require.True(t, exists(t, b, `tr[data-id="shared-root"]`))

	// A malformed PEM: Validate shows the API's error next to the certPem field.
	b.do(t, "open the form",
		chromedp.Click(chromedp.ID("new-cert")),
		chromedp.WaitVisible(chromedp.ID("cert-form")),
		chromedp.WaitEnabled(chromedp.ID("validate")),
		chromedp.SetValue(chromedp.ID("f-id"), "ui-root"),
		chromedp.SetValue(chromedp.ID("f-name"), "UI Made Root CA"),
		chromedp.SetValue(chromedp.ID("f-certPem"), "this is not PEM"),
		chromedp.Click(chromedp.ID("validate")),
		chromedp.WaitVisible(chromedp.ID("err-certPem")),
	)
	msg := run(t, b, "read the certPem error", chromedp.Text(chromedp.ID("err-certPem")))
	require.NotEmpty(t, msg)
	require.NotContains(t, msg, "this is not PEM", "errors never echo the input")
	invalid := run(t, b, "aria-invalid", chromedp.AttributeValue(chromedp.ID("f-certPem"), "aria-invalid"))
	require.Equal(t, "true", invalid.Value)

	// Pick the PEM from a local file (FileReader fills the text area), then Validate.
	b.do(t, "pick the PEM file and validate",
		void(chromedp.Evaluate[bool](`(document.getElementById('f-certPem').value = '', true)`)),
		chromedp.SetUploadFiles(chromedp.ID("f-certFile"), []string{pemFile}),
		void(chromedp.Poll[bool](`document.getElementById('f-certPem').value.includes('BEGIN CERTIFICATE')`,
			chromedp.WithPollingTimeout(10*time.Second))),
		chromedp.Click(chromedp.ID("validate")),
		chromedp.WaitVisible(chromedp.ID("preview-fingerprint")),
	)
	require.Equal(t, wantFP, run(t, b, "preview fingerprint", chromedp.Text(chromedp.ID("preview-fingerprint"))))
	require.False(t, run(t, b, "error slot", chromedp.Evaluate[bool](`!document.getElementById('err-certPem').hidden`)),
		"a new Validate clears the old error")
	// Validate saved nothing.
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/ui-root", Token: admin})
	require.Equal(t, http.StatusNotFound, res.Status)

	b.do(t, "create",
		chromedp.Click(chromedp.ID("save")),
		chromedp.WaitVisible(chromedp.ID("flash")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="ui-root"]`)),
	)
	require.Contains(t, run(t, b, "flash", chromedp.Text(chromedp.ID("flash"))), "Created ui-root")
	fpTitle := run(t, b, "fingerprint hover", chromedp.AttributeValue(chromedp.CSS(`tr[data-id="ui-root"] .fp-short`), "title"))
	require.Equal(t, wantFP, fpTitle.Value, "the full fingerprint is on hover")
	copyAttr := run(t, b, "fingerprint copy", chromedp.AttributeValue(chromedp.CSS(`tr[data-id="ui-root"] button.copy`), "data-copy"))
	require.Equal(t, wantFP, copyAttr.Value)

	// Edit the notes only: the stored material stays.
	b.do(t, "edit notes",
		chromedp.Click(chromedp.CSS(`a[href="/certs/ui-root/edit"]`)),
		chromedp.WaitVisible(chromedp.ID("f-notes")),
		chromedp.WaitEnabled(chromedp.ID("save")),
		chromedp.SetValue(chromedp.ID("f-notes"), "Rotated yearly by the PKI team"),
		chromedp.Click(chromedp.ID("save")),
		chromedp.WaitVisible(chromedp.ID("flash")),
	)
	notes := run(t, b, "notes cell", chromedp.Text(chromedp.CSS(`tr[data-id="ui-root"] td.notes`)))
	require.Equal(t, "Rotated yearly by the PKI team", notes)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/ui-root", Token: admin})
	require.Equal(t, wantFP, res.JSON(t)["fingerprintSha256"], "editing notes kept the material")

	// The referenced entry: its delete page lists the references and offers no delete.
	b.do(t, "open delete of the referenced entry",
		chromedp.Click(chromedp.CSS(`a[href="/certs/shared-root/delete"]`)),
		chromedp.WaitVisible(chromedp.ID("blocked")),
	)
	refs := run(t, b, "references", chromedp.Text(chromedp.ID("refs")))
	for _, want := range []string{"ingest-line-1", "tcp-out-3", "ingest-line-2", "mqtt-broker-1", "tls.caBundleRef"} {
		require.Contains(t, refs, want)
	}
	require.False(t, exists(t, b, "#delete"), "no delete button while referenced")

	// The unreferenced one goes.
	b.do(t, "delete the unreferenced entry",
		chromedp.Navigate(env.URL+"/certs/ui-root/delete"),
		chromedp.WaitVisible(chromedp.ID("unreferenced")),
		chromedp.WaitEnabled(chromedp.ID("delete")),
		chromedp.Click(chromedp.ID("delete")),
		chromedp.WaitVisible(chromedp.ID("flash")),
	)
	require.Contains(t, run(t, b, "flash", chromedp.Text(chromedp.ID("flash"))), "Deleted ui-root")
	require.False(t, exists(t, b, `tr[data-id="ui-root"]`))
	require.True(t, exists(t, b, `tr[data-id="shared-root"]`))
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/ui-root", Token: admin})
	require.Equal(t, http.StatusNotFound, res.Status)

	// Sign out, then in as a viewer: the list, read-only.
	b.do(t, "sign out",
		chromedp.Click(chromedp.CSS(`form[action="/logout"] button`)),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
	b.signIn(t, env.URL, viewer)
	require.True(t, exists(t, b, `tr[data-id="shared-root"]`), "a viewer sees the list")
	require.False(t, exists(t, b, "#new-cert"), "a viewer gets no create button")
	require.False(t, exists(t, b, `a[href$="/edit"]`), "a viewer gets no edit links")
	require.False(t, exists(t, b, `a[href$="/delete"]`), "a viewer gets no delete links")
	b.do(t, "viewer opens the form by URL", chromedp.Navigate(env.URL+"/certs/new"))
	h1 := run(t, b, "heading", chromedp.Text(chromedp.CSS("h1")))
	require.Equal(t, "Forbidden", h1)
	require.False(t, exists(t, b, "#cert-form"))

	require.Empty(t, b.problems(), "the pages ran without script errors or CSP refusals")
	require.NotContains(t, env.Logs.String(), strings.TrimSpace(string(certPEM))[30:90], "no PEM in the server log")
}

// TestBrowserSaveShowsWarnings: an entry saved with warnings (an expired CA) is stored, and
// the form says so and lists the warnings before going back to the list.
func TestBrowserSaveShowsWarnings(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	old := materialtest.NewCA(t, materialtest.Options{CommonName: "Retired Root",
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})

	b := newBrowser(t, 1280, 800)
	b.signIn(t, env.URL, admin)
	b.do(t, "create an expired CA through the form",
		chromedp.Click(chromedp.ID("new-cert")),
		chromedp.WaitVisible(chromedp.ID("cert-form")),
		chromedp.WaitEnabled(chromedp.ID("save")),
		chromedp.SetValue(chromedp.ID("f-id"), "retired-root"),
		chromedp.SetValue(chromedp.ID("f-name"), "Retired Root"),
		chromedp.SetValue(chromedp.ID("f-certPem"), string(old.CertPEM())),
		chromedp.Click(chromedp.ID("save")),
		chromedp.WaitVisible(chromedp.ID("saved-continue")),
	)
	status := run(t, b, "status", chromedp.Text(chromedp.ID("preview-status")))
	require.Contains(t, status, "Created, with the warnings below.")
	warnings := run(t, b, "warnings", chromedp.Text(chromedp.ID("preview-warnings")))
	require.Contains(t, warnings, "expired")
	require.True(t, run(t, b, "save disabled", chromedp.Evaluate[bool](`document.getElementById('save').disabled`)),
		"a second click must not try to create it again")
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/retired-root", Token: admin})
	require.Equal(t, http.StatusOK, res.Status, "saved anyway")

	b.do(t, "back to the list",
		chromedp.Click(chromedp.ID("saved-continue")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="retired-root"]`)),
	)
	require.Empty(t, b.problems())
}
