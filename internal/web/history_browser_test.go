package web_test

import (
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// TestBrowserHistoryAndRestore renews an entry, opens its History from the list, restores
// the first version after the in-page confirmation (cancelled once), and sees the old
// fingerprint back; a viewer sees the history without Restore buttons.
func TestBrowserHistoryAndRestore(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	editor := env.Token(t, "default", "editor")
	v1 := materialtest.NewCA(t, materialtest.Options{CommonName: "Root v1"}).CertPEM()
	v2 := materialtest.NewCA(t, materialtest.Options{CommonName: "Root v2"}).CertPEM()
	create(t, env, editor, map[string]any{"id": "root", "name": "Root", "type": "ca-bundle", "source": "inline", "certPem": string(v1)})
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: editor,
		Body: map[string]any{"certPem": string(v2)}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	b := newBrowser(t, 1280, 800)
	b.signIn(t, env.URL, editor)
	b.do(t, "open the history",
		chromedp.Click(chromedp.CSS(`a[aria-label="History of root"]`)),
		chromedp.WaitVisible(chromedp.ID("versions")),
		chromedp.WaitEnabled(chromedp.CSS(`tr[data-version="1"] button.restore`)),
	)
	require.Equal(t, fingerprint(t, v2), run(t, b, "current fingerprint", chromedp.Text(chromedp.ID("current-fingerprint"))))
	rows := run(t, b, "count versions", chromedp.Evaluate[int](`document.querySelectorAll('#versions tbody tr').length`))
	require.Equal(t, 2, rows)
	who := run(t, b, "who", chromedp.Text(chromedp.CSS(`tr[data-version="1"] td[data-label="Who"]`)))
	require.Equal(t, "test-editor", who)

	// Cancel changes nothing.
	b.do(t, "ask and cancel",
		chromedp.Click(chromedp.CSS(`tr[data-version="1"] button.restore`)),
		chromedp.WaitVisible(chromedp.ID("restore-confirm")),
		chromedp.Click(chromedp.ID("restore-no")),
		chromedp.WaitNotVisible(chromedp.ID("restore-confirm")),
	)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/root", Token: editor})
	require.Equal(t, fingerprint(t, v2), res.JSON(t)["fingerprintSha256"])

	b.do(t, "restore version 1",
		chromedp.Click(chromedp.CSS(`tr[data-version="1"] button.restore`)),
		chromedp.WaitVisible(chromedp.ID("restore-question")),
	)
	q := run(t, b, "question", chromedp.Text(chromedp.ID("restore-question")))
	require.Contains(t, q, "Restore version 1 of root")
	require.Contains(t, q, fingerprint(t, v1))
	b.do(t, "confirm",
		chromedp.Click(chromedp.ID("restore-yes")),
		chromedp.WaitVisible(chromedp.ID("flash")),
	)
	require.Equal(t, fingerprint(t, v1), run(t, b, "restored fingerprint", chromedp.Text(chromedp.ID("current-fingerprint"))))
	require.Equal(t, 3, run(t, b, "count versions", chromedp.Evaluate[int](`document.querySelectorAll('#versions tbody tr').length`)))
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/root", Token: editor})
	require.Equal(t, fingerprint(t, v1), res.JSON(t)["fingerprintSha256"])
	require.Empty(t, b.problems())

	// A viewer reads the history, without Restore, and has no Audit page.
	viewer := newBrowser(t, 1280, 800)
	viewer.signIn(t, env.URL, env.Token(t, "default", "viewer"))
	require.False(t, exists(t, viewer, "#nav-audit"))
	viewer.do(t, "open the history", chromedp.Navigate(env.URL+"/certs/root/history"), chromedp.WaitVisible(chromedp.ID("versions")))
	require.False(t, exists(t, viewer, "button.restore"))
	require.Empty(t, viewer.problems())
}

// TestBrowserAuditPage shows an admin the tenant's audit trail with its filters; an
// editor is refused the page.
func TestBrowserAuditPage(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Audited Root"}).CertPEM()
	create(t, env, admin, map[string]any{"id": "audited", "name": "Audited", "type": "ca-bundle", "source": "inline", "certPem": string(ca)})
	create(t, env, admin, map[string]any{"id": "other", "name": "Other", "type": "ca-bundle", "source": "inline", "certPem": string(ca)})
	res := env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/other", Token: admin})
	require.Equal(t, http.StatusNoContent, res.Status, "%s", res.Body)
	create(t, env, env.Token(t, "globex", "admin"), map[string]any{"id": "theirs", "name": "Theirs", "type": "ca-bundle", "source": "inline", "certPem": string(ca)})

	b := newBrowser(t, 1280, 800)
	b.signIn(t, env.URL, admin)
	b.do(t, "open the audit page", chromedp.Click(chromedp.ID("nav-audit")), chromedp.WaitVisible(chromedp.ID("audit")))
	require.Equal(t, 3, run(t, b, "count records", chromedp.Evaluate[int](`document.querySelectorAll('#audit tbody tr').length`)))
	newest := run(t, b, "newest action", chromedp.Text(chromedp.CSS(`tr[data-seq="3"] td[data-label="Action"]`)))
	require.Equal(t, "entry.delete", newest)
	require.False(t, run(t, b, "no other tenant", chromedp.Evaluate[bool](`document.body.textContent.includes('theirs')`)))

	b.do(t, "filter by action",
		chromedp.SetValue(chromedp.ID("audit-action"), "entry.create"),
		chromedp.Submit(chromedp.ID("audit-target")),
		chromedp.WaitReady(chromedp.CSS(`#audit-action option[value="entry.create"][selected]`)),
	)
	require.Equal(t, 2, run(t, b, "count creates", chromedp.Evaluate[int](`document.querySelectorAll('#audit tbody tr').length`)))
	b.do(t, "filter by target",
		chromedp.SetValue(chromedp.ID("audit-target"), "entry:audited"),
		chromedp.Submit(chromedp.ID("audit-target")),
		chromedp.WaitVisible(chromedp.CSS(`#audit-target[value="entry:audited"]`)),
	)
	require.Equal(t, 1, run(t, b, "count", chromedp.Evaluate[int](`document.querySelectorAll('#audit tbody tr').length`)))
	require.Empty(t, b.problems())

	editor := newBrowser(t, 1280, 800)
	editor.signIn(t, env.URL, env.Token(t, "default", "editor"))
	require.False(t, exists(t, editor, "#nav-audit"))
	editor.do(t, "open the audit page", chromedp.Navigate(env.URL+"/audit"), chromedp.WaitVisible(chromedp.CSS(`body[data-page="error"]`)))
	require.Contains(t, run(t, editor, "message", chromedp.Text(chromedp.ID("main"))), "needs the admin role")
}
