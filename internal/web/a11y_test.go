package web_test

import (
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// unlabelled lists the form controls on the page that have no accessible name.
const unlabelled = `[...document.querySelectorAll('input, select, textarea, button')]
	.filter(e => e.type !== 'hidden')
	.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby')
		&& !(e.tagName === 'BUTTON' && e.textContent.trim()))
	.map(e => e.id || e.name || e.outerHTML.slice(0, 80))`

// overflows is true when the page scrolls sideways: unreadable on a narrow window.
const overflows = `document.documentElement.scrollWidth > window.innerWidth`

// TestBrowserNarrowWindowAndKeyboard uses the UI on a phone-sized window with the keyboard
// only: sign in with Enter, reach the form from the list, find every control labelled,
// and never scroll sideways. The API reference renders offline from /openapi.json.
func TestBrowserNarrowWindowAndKeyboard(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "A CA with a rather long common name to wrap on small screens"})
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: admin, Body: map[string]any{
		"id": "a-long-entry-id-for-narrow-windows", "name": "Internal root CA of the plant network", "type": "ca-bundle",
		"source": "inline", "certPem": string(ca.CertPEM()), "notes": "Rotated by the PKI team every spring; ask #pki before changing."}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)

	b := newBrowser(t, 390, 844)
	b.do(t, "sign in with the keyboard",
		chromedp.Navigate(env.URL+"/login"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), admin+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="a-long-entry-id-for-narrow-windows"]`)),
	)
	require.Empty(t, run(t, b, "labels on the list", chromedp.Evaluate[[]string](unlabelled)))
	require.False(t, run(t, b, "list overflow", chromedp.Evaluate[bool](overflows)), "the list fits a narrow window")
	require.Equal(t, "block", run(t, b, "row layout", chromedp.Evaluate[string](
		`getComputedStyle(document.querySelector('tr[data-id]')).display`)), "rows become cards")

	b.do(t, "open the form with the keyboard",
		chromedp.Focus(chromedp.ID("new-cert")),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.ID("cert-form")),
		chromedp.WaitEnabled(chromedp.ID("validate")),
	)
	require.Empty(t, run(t, b, "labels on the form", chromedp.Evaluate[[]string](unlabelled)))
	require.False(t, run(t, b, "form overflow", chromedp.Evaluate[bool](overflows)))

	// Choosing a pair by keyboard shows the key inputs; Validate answers by keyboard too.
	b.do(t, "pick client-pair and validate an empty form",
		chromedp.Focus(chromedp.ID("f-type")),
		chromedp.SetValue(chromedp.ID("f-type"), "client-pair"),
		void(chromedp.Evaluate[bool](`document.getElementById('f-type').dispatchEvent(new Event('change'))`)),
		chromedp.WaitVisible(chromedp.ID("f-keyPem")),
		chromedp.Focus(chromedp.ID("validate")),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.ID("err-id")),
	)
	focused := run(t, b, "focus after errors", chromedp.Evaluate[string](`document.activeElement.id`))
	require.Equal(t, "f-id", focused, "the focus moves to the first field with a problem")

	b.do(t, "the API reference",
		chromedp.Navigate(env.URL+"/docs"),
		chromedp.WaitVisible(chromedp.CSS(`details#listCerts summary`)),
	)
	ops := run(t, b, "operations", chromedp.Evaluate[int](`document.querySelectorAll('details.op').length`))
	require.GreaterOrEqual(t, ops, 7, "every operation of the API is listed")
	b.do(t, "open one operation", chromedp.Click(chromedp.CSS(`details#createCert summary`)),
		chromedp.WaitVisible(chromedp.CSS(`details#createCert table`)))
	text := run(t, b, "createCert", chromedp.Text(chromedp.CSS(`details#createCert`)))
	require.Contains(t, text, "certPem")
	require.False(t, run(t, b, "docs overflow", chromedp.Evaluate[bool](overflows)))

	require.Empty(t, b.problems(), "the pages ran without script errors or CSP refusals")
}
