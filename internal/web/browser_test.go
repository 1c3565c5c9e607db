package web_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
)

// EnvRequireBrowser makes the browser tests fail, not skip, when Chromium is missing (CI).
const EnvRequireBrowser = "LOOPZE_REQUIRE_BROWSER"

// chromiumPath finds Debian's chromium, or skips (or fails under LOOPZE_REQUIRE_BROWSER=1).
func chromiumPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	msg := "no Chromium at /usr/bin/chromium: install it (apt-get install chromium) to run the browser tests"
	if os.Getenv(EnvRequireBrowser) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// browser is one headless Chromium with one tab, closed with the test. It records what
// the page logs, so a test can assert that no script failed and the CSP blocked nothing.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	logs []chromedp.ConsoleMessage
}

// newBrowser starts Chromium with a fresh profile and the background features off, at
// the given window size. On failure the test saves a screenshot of the page.
func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	b := &browser{ctx: bctx}
	require.NoError(t, chromedp.Do(bctx, chromedp.EmulateViewport(int64(width), int64(height))), "start chromium")
	go func() {
		for m, err := range chromedp.Console(bctx) {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.logs = append(b.logs, m)
			b.mu.Unlock()
		}
	}()
	// Registered last, so it runs first: the page is still there to photograph.
	t.Cleanup(func() {
		if t.Failed() {
			b.saveScreenshot(t)
		}
	})
	return b
}

// artifactDir is t.ArtifactDir() when go test runs with -artifacts (kept next to the test
// output), else a directory under the system temp dir that outlives the test.
func artifactDir(t *testing.T) string {
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return t.ArtifactDir()
	}
	dir, err := os.MkdirTemp("", "loopze-web-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		return os.TempDir()
	}
	return dir
}

func (b *browser) saveScreenshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("failure screenshot not taken: %v", err)
		return
	}
	p := filepath.Join(artifactDir(t), "failure.png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Logf("failure screenshot not written: %v", err)
		return
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	t.Logf("failure screenshot of %s saved to %s", loc, p)
}

// problems returns what the page logged that means something broke: uncaught exceptions,
// script errors and CSP refusals. Failed HTTP requests the test provokes on purpose (422,
// 409) are network entries and do not count.
func (b *browser) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.logs {
		if m.Type == chromedp.ConsoleException || (m.Type == chromedp.ConsoleError && m.Source != "network") {
			out = append(out, string(m.Type)+": "+m.Text)
		}
	}
	return out
}

// do runs steps with a deadline, so a selector that never matches fails the test with a
// timeout instead of hanging it.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, steps...), what)
}

// run runs one action that returns a value, with a deadline.
func run[T any](t *testing.T, b *browser, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err, what)
	return v
}

// void drops an action's value, to run it among steps.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, tg)
		return chromedp.Void{}, err
	}
}

// exists reports whether the page has an element matching the CSS selector right now.
func exists(t *testing.T, b *browser, css string) bool {
	t.Helper()
	return run(t, b, "look for "+css, chromedp.Evaluate[bool](fmt.Sprintf("document.querySelector(%q) !== null", css)))
}

// signIn goes through the sign-in page with token and waits for the Certificates page.
func (b *browser) signIn(t *testing.T, baseURL, token string) {
	t.Helper()
	b.do(t, "sign in",
		chromedp.Navigate(baseURL+"/certs"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-page="list"] h1`)),
	)
}

// fingerprint is how the store prints a certificate's SHA-256: uppercase hex, colons.
func fingerprint(t testing.TB, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block, "no PEM block")
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	sum := sha256.Sum256(c.Raw)
	parts := make([]string, len(sum))
	for i, x := range sum {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}

// ref is one deployed node field that names an entry, as in "tls.caBundleRef".
type ref struct{ flow, node, nodeType, field, entry string }

// deploy saves, through PUT /api/v1/flows, a workspace whose nodes make the given
// references; it replaces whatever was deployed before.
func deploy(t testing.TB, env *apitest.Env, token string, refs ...ref) {
	t.Helper()
	var flows []map[string]any
	flowByID := map[string]map[string]any{}
	nodeByID := map[string]map[string]any{}
	for _, r := range refs {
		f, ok := flowByID[r.flow]
		if !ok {
			f = map[string]any{"id": r.flow, "label": r.flow, "nodes": []any{}}
			flowByID[r.flow] = f
			flows = append(flows, f)
		}
		n, ok := nodeByID[r.node]
		if !ok {
			n = map[string]any{"id": r.node, "type": r.nodeType, "tls": map[string]any{}}
			nodeByID[r.node] = n
			f["nodes"] = append(f["nodes"].([]any), n)
		}
		key, found := strings.CutPrefix(r.field, "tls.")
		require.True(t, found, "only tls references: %s", r.field)
		n["tls"].(map[string]any)[key] = r.entry
	}
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: token,
		Body: map[string]any{"flows": flows}})
	require.Equal(t, http.StatusOK, res.Status, "deploy: %s", res.Body)
}
