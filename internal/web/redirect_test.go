package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/auth"
)

// signInLocation sends the sign-in page a next value the way a browser would, GET with the
// session cookie (rawQuery as written in the address bar) or POST of the form, and returns
// where the 303 points.
func signInLocation(t *testing.T, env *apitest.Env, token, method, rawQuery string, form url.Values) string {
	t.Helper()
	var req *http.Request
	var err error
	if method == http.MethodGet {
		req, err = http.NewRequest(http.MethodGet, env.URL+"/login?"+rawQuery, nil)
		require.NoError(t, err)
		req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: token})
	} else {
		req, err = http.NewRequest(http.MethodPost, env.URL+"/login", strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	return res.Header.Get("Location")
}

// sameOrigin reports whether a browser on base resolves loc to base's own origin.
func sameOrigin(t *testing.T, base, loc string) bool {
	t.Helper()
	b, err := url.Parse(base)
	require.NoError(t, err)
	// Browsers read a backslash as a slash and drop tabs and newlines before resolving.
	loc = strings.NewReplacer(`\`, "/", "\t", "", "\r", "", "\n", "").Replace(loc)
	u, err := b.Parse(loc)
	return err == nil && u.Scheme == b.Scheme && u.Host == b.Host
}

// TestSignInNeverRedirectsOffSite sends the attacking requests, GET /login with a valid
// session and POST /login, with hostile next values: every answer stays on this site and
// is a path http.Redirect leaves as it is.
func TestSignInNeverRedirectsOffSite(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "viewer")

	// The two requests that redirected to evil.com, byte for byte.
	require.Equal(t, "/certs", signInLocation(t, env, tok, http.MethodGet, "next=%2F.%2F%5Cevil.com", nil))
	require.Equal(t, "/certs", signInLocation(t, env, tok, http.MethodPost, "", url.Values{"token": {tok}, "next": {`/./\evil.com`}}))

	hostile := []string{
		"//evil.com", "//evil.com/certs", `/\evil.com`, `\\evil.com`, `\/evil.com`, `/./\evil.com`, `/.//evil.com`,
		"/../evil.com/..//evil.com", "/x/../\\evil.com", `/certs/..\..\evil.com`, "///evil.com", "/%2F%2Fevil.com",
		"/%5Cevil.com", "/%5C%5Cevil.com", "/.%2F%5Cevil.com", "%2F%2Fevil.com", "javascript:alert(1)",
		"JavaScript:alert(1)", "/javascript:alert(1)//", "data:text/html,x", "https://evil.com/", "http:evil.com",
		"https:/evil.com", "//user@evil.com", "evil.com", "certs", "/\t/evil.com", "/\n/evil.com", "/%09/evil.com",
		"/%0d%0aLocation:%20https://evil.com", "/certs\r\nSet-Cookie: x=1", "/certs?q=%0aSet-Cookie", "/login",
		"/./login", "/login/", "/certs/../login?next=//evil.com",
	}
	for _, next := range hostile {
		t.Run(next, func(t *testing.T) {
			t.Parallel()
			get := signInLocation(t, env, tok, http.MethodGet, url.Values{"next": {next}}.Encode(), nil)
			post := signInLocation(t, env, tok, http.MethodPost, "", url.Values{"token": {tok}, "next": {next}})
			for _, loc := range []string{get, post} {
				require.True(t, sameOrigin(t, env.URL, loc), "next %q led to %q", next, loc)
				require.NotContains(t, loc, `\`)
				require.False(t, strings.HasPrefix(loc, "//"), loc)
			}
			require.Equal(t, get, post, "GET and POST judge alike")
		})
	}

	// Local paths still work, in the cleaned form the browser would reach anyway.
	for next, want := range map[string]string{
		"/certs?q=edge":             "/certs?q=edge",
		"/certs/x/edit":             "/certs/x/edit",
		"/certs/./x/../y/edit":      "/certs/y/edit",
		"/certs/":                   "/certs/",
		"/certs?type=ca-bundle&q=a": "/certs?type=ca-bundle&q=a",
	} {
		require.Equal(t, want, signInLocation(t, env, tok, http.MethodGet, url.Values{"next": {next}}.Encode(), nil), next)
		require.Equal(t, want, signInLocation(t, env, tok, http.MethodPost, "", url.Values{"token": {tok}, "next": {next}}), next)
	}
}
