package api_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// TestAuthenticatedResponsesAreNotStored checks Cache-Control: no-store on every answer to
// an authenticated API operation (successes and refusals alike) and on the web UI pages
// and redirects that need a session, so no shared cache or browser history keeps a
// tenant's catalogue.
func TestAuthenticatedResponsesAreNotStored(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	editor := env.Token(t, "default", "editor")
	viewer := env.Token(t, "default", "viewer")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "No Store CA"})
	entry := inlineCA("no-store-ca", ca)

	api := []struct {
		name   string
		req    apitest.Request
		status int
	}{
		{"create", apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editor, Body: entry}, http.StatusCreated},
		{"list", apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: viewer}, http.StatusOK},
		{"get", apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/no-store-ca", Token: viewer}, http.StatusOK},
		{"get by cookie", apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/no-store-ca", Token: viewer, Cookie: true}, http.StatusOK},
		{"references", apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/no-store-ca/references", Token: viewer}, http.StatusOK},
		{"validate", apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: editor, Body: inlineCA("other", ca)}, http.StatusOK},
		{"flows", apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows", Token: viewer}, http.StatusOK},
		{"unknown id", apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/nope", Token: viewer}, http.StatusNotFound},
		{"invalid entry", apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editor, Body: map[string]any{"id": "x"}}, http.StatusUnprocessableEntity},
		{"no token", apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs"}, http.StatusUnauthorized},
		{"role too low", apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/no-store-ca", Token: viewer}, http.StatusForbidden},
		{"delete", apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/no-store-ca", Token: editor}, http.StatusNoContent},
	}
	for _, tc := range api {
		res := env.Do(t, tc.req)
		require.Equal(t, tc.status, res.Status, "%s: %s", tc.name, res.Body)
		require.Equal(t, "no-store", res.Header.Get("Cache-Control"), tc.name)
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ui := []struct {
		method, path string
		form         url.Values
		cookie       string
		status       int
	}{
		{http.MethodGet, "/certs", nil, viewer, http.StatusOK},
		{http.MethodGet, "/certs/new", nil, editor, http.StatusOK},
		{http.MethodGet, "/certs/new", nil, viewer, http.StatusForbidden},
		{http.MethodGet, "/certs", nil, "", http.StatusSeeOther},
		{http.MethodGet, "/login?next=%2Fcerts", nil, viewer, http.StatusSeeOther},
		{http.MethodPost, "/login", url.Values{"token": {editor}, "next": {"/certs"}}, "", http.StatusSeeOther},
		{http.MethodPost, "/logout", url.Values{}, editor, http.StatusSeeOther},
	}
	for _, tc := range ui {
		req, err := http.NewRequest(tc.method, env.URL+tc.path, strings.NewReader(tc.form.Encode()))
		require.NoError(t, err)
		if tc.form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if tc.cookie != "" {
			req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: tc.cookie})
		}
		res, err := noRedirect.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, tc.status, res.StatusCode, "%s %s", tc.method, tc.path)
		require.Equal(t, "no-store", res.Header.Get("Cache-Control"), "%s %s", tc.method, tc.path)
	}
}
