package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// TestDeployOverEmptyWorkspace: the ETag "0" of a tenant that never deployed is a valid
// If-Match, meaning "still empty".
func TestDeployOverEmptyWorkspace(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "fresh", "editor")
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows", Token: tok})
	require.Equal(t, http.StatusOK, res.Status)
	tag := res.Header.Get("ETag")
	require.Equal(t, `"0"`, tag)
	put := func(tag string) *apitest.Response {
		return env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok,
			Body: workspaceOf(flow("f1")), Headers: map[string]string{"If-Match": tag}})
	}
	res = put(tag)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, `"1"`, res.Header.Get("ETag"))
	// Once deployed, "0" no longer matches.
	require.Equal(t, http.StatusPreconditionFailed, put(`"0"`).Status)
}

// TestIfMatchForeignTag: a well-formed entity tag this API never issued is 412 (RFC 9110),
// a header that is no entity tag at all stays 400.
func TestIfMatchForeignTag(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Root"})
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlineCA("root", ca)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	for tag, want := range map[string]int{
		`"not-a-version"`: http.StatusPreconditionFailed,
		`W/"1"`:           http.StatusPreconditionFailed, // If-Match compares strongly
		`"0"`:             http.StatusPreconditionFailed, // entries start at version 1
		`"x", "y"`:        http.StatusPreconditionFailed,
		`not-a-tag`:       http.StatusBadRequest,
		`"unterminated`:   http.StatusBadRequest,
		`"1", "2"`:        http.StatusBadRequest,
		`"9", "1"`:        http.StatusBadRequest,
	} {
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok,
			Body: map[string]any{"notes": "x"}, Headers: map[string]string{"If-Match": tag}})
		require.Equal(t, want, res.Status, "If-Match %s: %s", tag, res.Body)
		res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok,
			Body: workspaceOf(), Headers: map[string]string{"If-Match": tag}})
		if tag != `"0"` {
			require.Equal(t, want, res.Status, "flows If-Match %s: %s", tag, res.Body)
		}
	}
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok,
		Body: map[string]any{"notes": "x"}, Headers: map[string]string{"If-Match": `"zz", "1"`}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
}

// TestValidateWithoutID: a probe of material alone answers 200 with what it found.
func TestValidateWithoutID(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Root"})
	body := inlineCA("", ca)
	delete(body, "id")
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: body})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got := res.JSON(t)
	require.Equal(t, true, got["valid"], "%s", res.Body)
	require.Equal(t, fingerprint(ca), got["metadata"].(map[string]any)["fingerprintSha256"])

	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok,
		Body: map[string]any{"type": "ca-bundle", "source": "inline", "certPem": "garbage"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got = res.JSON(t)
	require.Equal(t, false, got["valid"])
	require.NotContains(t, got, "metadata")
	require.NotEmpty(t, got["errors"])
	for _, e := range got["errors"].([]any) {
		require.NotEqual(t, "body.id", e.(map[string]any)["location"])
	}

	// A given id is still checked.
	body["id"] = "Not A Slug"
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: body})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"location":"body.id"`)
}

// TestPutCreateAnswers201: the PUT of an unknown ID creates it, as documented.
func TestPutCreateAnswers201(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Root"})
	body := inlineCA("new-root", ca)
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/new-root", Token: tok, Body: body})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Equal(t, "/api/v1/certs/new-root", res.Header.Get("Location"))
}

// TestErrorShapeEverywhere: a wrong media type is a declared 415, and the router's own 404
// and 405 answer the JSON error shape.
func TestErrorShapeEverywhere(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok,
		Body: "id=x", Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
	require.Equal(t, http.StatusUnsupportedMediaType, res.Status, "%s", res.Body)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/nothing-here", Token: tok})
	require.Equal(t, http.StatusNotFound, res.Status)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	require.Equal(t, "Not Found", res.JSON(t)["error"])

	res = env.Do(t, apitest.Request{Method: http.MethodPatch, Path: "/api/v1/certs", Token: tok, Body: "{}"})
	require.Equal(t, http.StatusMethodNotAllowed, res.Status)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	require.Contains(t, res.Header.Get("Allow"), "POST")
	require.Equal(t, "Method Not Allowed", res.JSON(t)["error"])
}

// TestConditionalGet: the conditional GETs of an entry, the workspace and the credentials
// file read If-None-Match alike: a 304 with no body and the current ETag when the header
// is "*" or names the current tag, weakly (W/ too) and anywhere in a list; the full answer
// for another tag and for a header that is not "*" nor a list of entity tags ("*" in a
// list, a bare word). Once the version moves, the same tag gets the new version.
func TestConditionalGet(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Root"})
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlineCA("root", ca)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	env.Export(t, "acme")

	for path, tok := range map[string]string{"/api/v1/certs/root": tok, "/api/v1/flows": tok,
		"/api/v1/credentials": env.Token(t, "acme", "runtime")} {
		res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: path, Token: tok})
		require.Equal(t, http.StatusOK, res.Status)
		tag := res.Header.Get("ETag")
		require.Regexp(t, `^"[0-9]+"$`, tag, path)
		for _, c := range []struct {
			header string
			want   int
		}{
			{tag, http.StatusNotModified},
			{"W/" + tag, http.StatusNotModified},
			{`"other", ` + tag, http.StatusNotModified},
			{`W/"999",W/` + tag + ` , "x"`, http.StatusNotModified},
			{"*", http.StatusNotModified},
			{" * ", http.StatusNotModified},
			{`"999"`, http.StatusOK},
			{`W/"999", "x"`, http.StatusOK},
			{strings.Trim(tag, `"`), http.StatusOK},
			{`"999", *`, http.StatusOK},
			{"yesterday, " + tag, http.StatusOK},
			{tag + "x", http.StatusOK},
		} {
			res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: path, Token: tok, Headers: map[string]string{"If-None-Match": c.header}})
			require.Equal(t, c.want, res.Status, "%s If-None-Match %s", path, c.header)
			require.Equal(t, tag, res.Header.Get("ETag"), "%s If-None-Match %s", path, c.header)
			if c.want == http.StatusNotModified {
				require.Empty(t, res.Body)
			} else {
				require.NotEmpty(t, res.Body)
			}
		}
	}

	// Both versions move: the old tags get the new representation.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok, Body: map[string]any{"notes": "moved"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	deploy(t, env, tok, workspaceOf(flow("f1")))
	for path, old := range map[string]string{"/api/v1/certs/root": `"1"`, "/api/v1/flows": `"0"`} {
		res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: path, Token: tok, Headers: map[string]string{"If-None-Match": old}})
		require.Equal(t, http.StatusOK, res.Status, path)
		require.NotEqual(t, old, res.Header.Get("ETag"))
	}
}

// TestConditionalWritesOfEntries: If-Match: * writes only over an entry that exists and
// If-None-Match: * only where none does (RFC 9110 13.1.1 and 13.1.2); a precondition that
// does not hold is a 412 that changes nothing.
func TestConditionalWritesOfEntries(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Root"})
	do := func(method, path string, body any, headers map[string]string) *apitest.Response {
		return env.Do(t, apitest.Request{Method: method, Path: path, Token: tok, Body: body, Headers: headers})
	}
	get := func(id string) int { return do(http.MethodGet, "/api/v1/certs/"+id, nil, nil).Status }

	// If-Match on an entry that does not exist: nothing matches, nothing is created.
	for _, tag := range []string{"*", `"1"`} {
		res := do(http.MethodPut, "/api/v1/certs/root", inlineCA("root", ca), map[string]string{"If-Match": tag})
		require.Equal(t, http.StatusPreconditionFailed, res.Status, "If-Match %s on a missing entry: %s", tag, res.Body)
		require.Equal(t, http.StatusNotFound, get("root"), "a refused PUT created the entry")
		res = do(http.MethodDelete, "/api/v1/certs/root", nil, map[string]string{"If-Match": tag})
		require.Equal(t, http.StatusPreconditionFailed, res.Status, "DELETE If-Match %s on a missing entry: %s", tag, res.Body)
	}
	// If-None-Match: * is a create only.
	res := do(http.MethodPut, "/api/v1/certs/root", inlineCA("root", ca), map[string]string{"If-None-Match": "*"})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	res = do(http.MethodPut, "/api/v1/certs/root", map[string]any{"notes": "overwritten"}, map[string]string{"If-None-Match": "*"})
	require.Equal(t, http.StatusPreconditionFailed, res.Status, "If-None-Match: * over an existing entry: %s", res.Body)
	got := do(http.MethodGet, "/api/v1/certs/root", nil, nil)
	require.Equal(t, `"1"`, got.Header.Get("ETag"), "the refused PUT changed the entry")
	require.NotEqual(t, "overwritten", got.JSON(t)["notes"])

	// If-None-Match with the current tag refuses, with another tag passes.
	res = do(http.MethodPut, "/api/v1/certs/root", map[string]any{"notes": "x"}, map[string]string{"If-None-Match": `W/"1"`})
	require.Equal(t, http.StatusPreconditionFailed, res.Status, "%s", res.Body)
	res = do(http.MethodPut, "/api/v1/certs/root", map[string]any{"notes": "x"}, map[string]string{"If-None-Match": `"7"`})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res = do(http.MethodPut, "/api/v1/certs/root", map[string]any{"notes": "x"}, map[string]string{"If-None-Match": `yesterday`})
	require.Equal(t, http.StatusBadRequest, res.Status, "%s", res.Body)

	// If-Match: * over an entry that exists is an update.
	res = do(http.MethodPut, "/api/v1/certs/root", map[string]any{"notes": "y"}, map[string]string{"If-Match": "*"})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res = do(http.MethodDelete, "/api/v1/certs/root", nil, map[string]string{"If-Match": "*"})
	require.Equal(t, http.StatusNoContent, res.Status, "%s", res.Body)
	// A deleted entry has no version: a restore with If-Match: * is refused.
	res = do(http.MethodPost, "/api/v1/certs/root/versions/1/restore", nil, map[string]string{"If-Match": "*"})
	require.Equal(t, http.StatusPreconditionFailed, res.Status, "%s", res.Body)
	require.Equal(t, http.StatusNotFound, get("root"))
	res = do(http.MethodPost, "/api/v1/certs/root/versions/1/restore", nil, nil)
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
}
