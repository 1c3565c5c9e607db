package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/web"
)

var testSecret = []byte("web-test-hmac-secret-0123456789abcdef")

// uiServer serves the UI alone (no database: sign-in, sign-out, static files and headers
// need none), over TLS when tls is true.
func uiServer(t *testing.T, tls bool) *httptest.Server {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	require.NoError(t, err)
	h := web.New(web.Config{Verifier: v})
	var s *httptest.Server
	if tls {
		s = httptest.NewTLSServer(h)
	} else {
		s = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	return s
}

func mint(t *testing.T, role auth.Role, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint(testSecret, auth.Principal{Subject: "ops", Tenant: "default", Role: role}, ttl, "", "", time.Now())
	require.NoError(t, err)
	return tok
}

// noRedirect is a client that shows redirects instead of following them.
func noRedirect(s *httptest.Server) *http.Client {
	c := *s.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

func postForm(t *testing.T, s *httptest.Server, path string, form url.Values, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := noRedirect(s).Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = res.Body.Close() })
	return res
}

func sessionCookie(res *http.Response) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == auth.CookieName {
			return c
		}
	}
	return nil
}

func TestSignInSetsTheSessionCookie(t *testing.T) {
	t.Parallel()
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[tls], func(t *testing.T) {
			t.Parallel()
			s := uiServer(t, tls)
			tok := mint(t, auth.Editor, 2*time.Hour)
			res := postForm(t, s, "/login", url.Values{"token": {"  " + tok + "\n"}, "next": {"/certs?type=ca-bundle"}},
				map[string]string{"Origin": s.URL, "Sec-Fetch-Site": "same-origin"})
			require.Equal(t, http.StatusSeeOther, res.StatusCode)
			require.Equal(t, "/certs?type=ca-bundle", res.Header.Get("Location"), "back where the user was going")
			c := sessionCookie(res)
			require.NotNil(t, c)
			require.Equal(t, tok, c.Value, "the cookie carries the token, trimmed")
			require.True(t, c.HttpOnly)
			require.Equal(t, http.SameSiteStrictMode, c.SameSite)
			require.Equal(t, "/", c.Path)
			require.Equal(t, tls, c.Secure, "Secure exactly when served over TLS")
			require.WithinDuration(t, time.Now().Add(2*time.Hour), c.Expires, 5*time.Second, "the cookie ends with the token")
			require.InDelta(t, (2 * time.Hour).Seconds(), float64(c.MaxAge), 5)
		})
	}
}

func TestSignInRefusals(t *testing.T) {
	t.Parallel()
	s := uiServer(t, false)
	other, err := auth.Mint([]byte("another-server-secret-0123456789abcdef"),
		auth.Principal{Subject: "ops", Tenant: "default", Role: auth.Admin}, time.Hour, "", "", time.Now())
	require.NoError(t, err)
	expired, err := auth.Mint(testSecret, auth.Principal{Subject: "ops", Tenant: "default", Role: auth.Admin},
		time.Minute, "", "", time.Now().Add(-time.Hour))
	require.NoError(t, err)
	cases := []struct {
		name   string
		token  string
		header map[string]string
		status int
	}{
		{"empty", "", nil, http.StatusUnauthorized},
		{"garbage", "not-a-jwt", nil, http.StatusUnauthorized},
		{"other server's key", other, nil, http.StatusUnauthorized},
		{"expired", expired, nil, http.StatusUnauthorized},
		{"cross-site form", mint(t, auth.Admin, time.Hour),
			map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := postForm(t, s, "/login", url.Values{"token": {tc.token}}, tc.header)
			require.Equal(t, tc.status, res.StatusCode)
			require.Nil(t, sessionCookie(res), "no session without a good token from this site")
			body := readBody(t, res)
			if tc.token != "" {
				require.NotContains(t, body, tc.token, "the page never echoes the token")
			}
			if tc.status == http.StatusUnauthorized {
				require.Contains(t, body, `aria-invalid="true"`)
				require.Contains(t, body, `id="token-error"`)
			}
		})
	}
}

func TestSignOutClearsTheCookie(t *testing.T) {
	t.Parallel()
	s := uiServer(t, true)
	res := postForm(t, s, "/logout", nil, map[string]string{"Origin": s.URL, "Sec-Fetch-Site": "same-origin"})
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Equal(t, "/login?signedout=1", res.Header.Get("Location"))
	c := sessionCookie(res)
	require.NotNil(t, c, "sign-out sends the cookie to overwrite it")
	require.Empty(t, c.Value)
	require.Less(t, c.MaxAge, 0, "Max-Age=0 tells the browser to drop it now")
	require.True(t, c.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, c.SameSite)
	require.Equal(t, "/", c.Path)

	res = postForm(t, s, "/logout", nil, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
	require.Equal(t, http.StatusForbidden, res.StatusCode, "a foreign page cannot sign the user out")
	require.Nil(t, sessionCookie(res))
}

func TestRedirectsKeepTheUserOnThisSite(t *testing.T) {
	t.Parallel()
	s := uiServer(t, false)
	tok := mint(t, auth.Viewer, time.Hour)
	cases := []struct{ next, want string }{
		{"", "/certs"},
		{"/certs?q=edge", "/certs?q=edge"},
		{"/certs/x/edit", "/certs/x/edit"},
		{"//evil.example/", "/certs"},
		{`/\evil.example`, "/certs"},
		{"https://evil.example/", "/certs"},
		{"javascript:alert(1)", "/certs"},
		{"/login", "/certs"},
		{"certs", "/certs"},
	}
	for _, tc := range cases {
		t.Run(tc.next, func(t *testing.T) {
			t.Parallel()
			res := postForm(t, s, "/login", url.Values{"token": {tok}, "next": {tc.next}}, nil)
			require.Equal(t, http.StatusSeeOther, res.StatusCode)
			require.Equal(t, tc.want, res.Header.Get("Location"))
		})
	}
}

func TestPagesNeedASession(t *testing.T) {
	t.Parallel()
	s := uiServer(t, false)
	expired, err := auth.Mint(testSecret, auth.Principal{Subject: "ops", Tenant: "default", Role: auth.Admin},
		time.Minute, "", "", time.Now().Add(-time.Hour))
	require.NoError(t, err)
	for _, tc := range []struct{ cookie, want string }{
		{"", "/login?next=%2Fcerts%2Fnew"},
		{expired, "/login?expired=1&next=%2Fcerts%2Fnew"},
		{"garbage", "/login?expired=1&next=%2Fcerts%2Fnew"},
	} {
		req, err := http.NewRequest(http.MethodGet, s.URL+"/certs/new", nil)
		require.NoError(t, err)
		if tc.cookie != "" {
			req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: tc.cookie})
		}
		res, err := noRedirect(s).Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusSeeOther, res.StatusCode)
		require.Equal(t, tc.want, res.Header.Get("Location"))
	}
}

var (
	scriptTag      = regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)
	styleOrHandler = regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=`)
)

// inlineCode lists what a strict CSP would block in a page: inline scripts, style
// elements and attributes, event handler attributes.
func inlineCode(page string) []string {
	var out []string
	for _, m := range scriptTag.FindAllStringSubmatch(page, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			out = append(out, m[0])
		}
	}
	return append(out, styleOrHandler.FindAllString(page, -1)...)
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(b)
}

func TestEveryResponseCarriesTheCSP(t *testing.T) {
	t.Parallel()
	s := uiServer(t, false)
	viewer := mint(t, auth.Viewer, time.Hour)
	cases := []struct {
		path   string
		cookie string
		status int
		html   bool
	}{
		{"/login", "", http.StatusOK, true},
		{"/login?expired=1", "", http.StatusOK, true},
		{"/docs", "", http.StatusOK, true},
		{"/docs", viewer, http.StatusOK, true},
		{"/certs/new", viewer, http.StatusForbidden, true},
		{"/static/app.js", "", http.StatusOK, false},
		{"/static/app.css", "", http.StatusOK, false},
		{"/static/docs.js", "", http.StatusOK, false},
		{"/static/nope.js", "", http.StatusNotFound, false},
		{"/certs", "", http.StatusSeeOther, false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(http.MethodGet, s.URL+tc.path, nil)
			require.NoError(t, err)
			if tc.cookie != "" {
				req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: tc.cookie})
			}
			res, err := noRedirect(s).Do(req)
			require.NoError(t, err)
			body := readBody(t, res)
			require.Equal(t, tc.status, res.StatusCode)
			csp := res.Header.Get("Content-Security-Policy")
			require.Equal(t, web.ContentSecurityPolicy, csp)
			for _, d := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'",
				"frame-ancestors 'none'", "form-action 'self'", "object-src 'none'", "base-uri 'none'"} {
				require.Contains(t, csp, d)
			}
			require.NotContains(t, csp, "unsafe-inline")
			require.NotContains(t, csp, "unsafe-eval")
			require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
			require.Equal(t, "DENY", res.Header.Get("X-Frame-Options"))
			if tc.html {
				require.Equal(t, "text/html; charset=utf-8", res.Header.Get("Content-Type"))
				require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
				require.Empty(t, inlineCode(body), "no inline script or style: the CSP would block it")
				require.NotContains(t, body, "://", "no resource from another origin: the UI works air-gapped")
			}
		})
	}
}

func TestStaticFilesRevalidateByHash(t *testing.T) {
	t.Parallel()
	s := uiServer(t, false)
	res, err := s.Client().Get(s.URL + "/login")
	require.NoError(t, err)
	page := readBody(t, res)
	m := regexp.MustCompile(`src="(/static/app\.js\?v=([0-9a-f]+))"`).FindStringSubmatch(page)
	require.NotNil(t, m, "the page names its script with a content hash")

	res, err = s.Client().Get(s.URL + m[1])
	require.NoError(t, err)
	js := readBody(t, res)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/javascript; charset=utf-8", res.Header.Get("Content-Type"))
	require.Equal(t, `"`+m[2]+`"`, res.Header.Get("ETag"))
	require.Contains(t, res.Header.Get("Cache-Control"), "immutable", "a hashed URL never changes")
	require.Contains(t, js, "use strict")

	req, err := http.NewRequest(http.MethodGet, s.URL+"/static/app.js", nil)
	require.NoError(t, err)
	req.Header.Set("If-None-Match", `"`+m[2]+`"`)
	res, err = s.Client().Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusNotModified, res.StatusCode)
	require.Equal(t, "no-cache", res.Header.Get("Cache-Control"), "an unhashed URL revalidates")
}
