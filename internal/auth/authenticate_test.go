package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func mint(t *testing.T, role Role) string {
	t.Helper()
	tok, err := Mint(testSecret, Principal{Subject: "alice", Tenant: "acme", Role: role}, time.Hour, "", "", time.Now())
	require.NoError(t, err)
	return tok
}

func TestAuthenticateTokenSources(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{HMACSecret: testSecret})
	viewer, admin := mint(t, Viewer), mint(t, Admin)
	bad := viewer[:len(viewer)-4] + "AAAA"

	for _, tc := range []struct {
		name    string
		auth    string
		cookie  string
		wantVia string
		want    Role
		noToken bool
	}{
		{name: "bearer", auth: "Bearer " + viewer, wantVia: ViaBearer, want: Viewer},
		{name: "bearer scheme is case-insensitive", auth: "bearer " + viewer, wantVia: ViaBearer, want: Viewer},
		{name: "cookie", cookie: admin, wantVia: ViaCookie, want: Admin},
		{name: "bearer wins over cookie", auth: "Bearer " + viewer, cookie: admin, wantVia: ViaBearer, want: Viewer},
		{name: "bad bearer is not rescued by a good cookie", auth: "Bearer " + bad, cookie: admin},
		{name: "bad cookie", cookie: bad},
		{name: "empty bearer", auth: "Bearer ", cookie: admin},
		{name: "basic auth from a proxy leaves the cookie", auth: "Basic dXNlcjpwdw==", cookie: admin, wantVia: ViaCookie, want: Admin},
		{name: "basic auth alone", auth: "Basic dXNlcjpwdw==", noToken: true},
		{name: "nothing", noToken: true},
		{name: "empty cookie", cookie: "", noToken: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/api/v1/certs", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			if tc.cookie != "" {
				r.AddCookie(&http.Cookie{Name: CookieName, Value: tc.cookie})
			}
			p, err := v.Authenticate(r)
			if tc.want == RoleNone {
				require.ErrorIs(t, err, ErrUnauthenticated)
				require.Equal(t, tc.noToken, errors.Is(err, ErrNoToken))
				require.NotContains(t, err.Error(), bad)
				return
			}
			require.NoError(t, err)
			require.Equal(t, Principal{Subject: "alice", Tenant: "acme", Role: tc.want, Via: tc.wantVia}, p)
		})
	}
}

func TestAuthenticateOrigin(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{HMACSecret: testSecret, AllowedOrigins: []string{"HTTPS://UI.Example:443/", "http://[::1]:3000"}})
	tok := mint(t, Editor)

	for _, tc := range []struct {
		name    string
		method  string
		bearer  bool
		host    string // empty: httptest's example.com
		headers map[string]string
		refused bool
	}{
		{name: "foreign origin, cookie, POST", method: "POST", headers: map[string]string{"Origin": "https://evil.example"}, refused: true},
		{name: "foreign origin, cookie, PUT", method: "PUT", headers: map[string]string{"Origin": "https://evil.example"}, refused: true},
		{name: "foreign origin, cookie, PATCH", method: "PATCH", headers: map[string]string{"Origin": "https://evil.example"}, refused: true},
		{name: "foreign origin, cookie, DELETE", method: "DELETE", headers: map[string]string{"Origin": "https://evil.example"}, refused: true},
		{name: "same host on another port", method: "POST", headers: map[string]string{"Origin": "http://example.com:8080"}, refused: true},
		{name: "Origin null", method: "POST", headers: map[string]string{"Origin": "null"}, refused: true},
		{name: "Origin null without Host", method: "POST", host: "-", headers: map[string]string{"Origin": "null"}, refused: true},
		{name: "file origin without Host", method: "POST", host: "-", headers: map[string]string{"Origin": "file://"}, refused: true},
		{name: "browser says cross-site", method: "POST", headers: map[string]string{"Sec-Fetch-Site": "cross-site"}, refused: true},
		{name: "allowed origin on another port is still foreign", method: "POST", headers: map[string]string{"Origin": "https://ui.example:8443"}, refused: true},
		{name: "no Origin (curl)", method: "POST"},
		{name: "same host", method: "POST", headers: map[string]string{"Origin": "http://example.com"}},
		{name: "same host behind TLS proxy", method: "DELETE", headers: map[string]string{"Origin": "https://example.com"}},
		{name: "same host with port", method: "POST", host: "loopze.local:8080", headers: map[string]string{"Origin": "http://loopze.local:8080"}},
		{name: "browser says same-origin", method: "POST", headers: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"}},
		{name: "allowed origin, normalised", method: "POST", headers: map[string]string{"Origin": "https://ui.example"}},
		{name: "allowed IPv6 origin", method: "PUT", headers: map[string]string{"Origin": "http://[::1]:3000"}},
		{name: "GET with foreign origin", method: "GET", headers: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{name: "HEAD with foreign origin", method: "HEAD", headers: map[string]string{"Origin": "https://evil.example"}},
		{name: "bearer with foreign origin", method: "POST", bearer: true, headers: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{name: "bearer with Origin null", method: "DELETE", bearer: true, headers: map[string]string{"Origin": "null"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(tc.method, "/api/v1/certs", nil)
			switch tc.host {
			case "":
			case "-":
				r.Host = ""
			default:
				r.Host = tc.host
			}
			for k, val := range tc.headers {
				r.Header.Set(k, val)
			}
			if tc.bearer {
				r.Header.Set("Authorization", "Bearer "+tok)
			} else {
				r.AddCookie(&http.Cookie{Name: CookieName, Value: tok})
			}
			p, err := v.Authenticate(r)
			if tc.refused {
				require.ErrorIs(t, err, ErrForbiddenOrigin)
				require.NotErrorIs(t, err, ErrUnauthenticated, "a refused origin is 403, not 401")
				require.Equal(t, Principal{}, p)
				return
			}
			require.NoError(t, err)
			require.Equal(t, Editor, p.Role)
		})
	}
}

// A bad token is reported as such even from a foreign origin: 401 before 403.
func TestAuthenticateTokenBeforeOrigin(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{HMACSecret: testSecret})
	r := httptest.NewRequest(http.MethodPost, "/api/v1/certs", nil)
	r.Header.Set("Origin", "https://evil.example")
	r.AddCookie(&http.Cookie{Name: CookieName, Value: "garbage"})
	_, err := v.Authenticate(r)
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.NotErrorIs(t, err, ErrForbiddenOrigin)
}
