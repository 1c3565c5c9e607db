package api_test

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// fingerprint is what `openssl x509 -noout -fingerprint -sha256` prints after "=".
func fingerprint(c *materialtest.Cert) string {
	sum := sha256.Sum256(c.Cert.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func inlineCA(id string, ca *materialtest.Cert) map[string]any {
	return map[string]any{"id": id, "name": "CA " + id, "type": "ca-bundle", "source": "inline",
		"certPem": string(materialtest.EncodeCert(ca.Cert))}
}

func inlinePair(id string, c *materialtest.Cert) map[string]any {
	return map[string]any{"id": id, "name": "Pair " + id, "type": "client-pair", "source": "inline",
		"certPem": string(c.ChainPEM()), "keyPem": string(c.KeyPEM())}
}

// TestSeedDocumentCalls runs the two curl calls of the operator documentation, with a
// bearer token and with the session cookie, and reads the entries back.
func TestSeedDocumentCalls(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Internal Root CA"})
	client := ca.Issue(t, materialtest.Options{CommonName: "edge-gateway"})
	dir := t.TempDir()
	certPath := apitest.WriteFile(t, dir, "edge.crt", client.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "edge.key", client.KeyPEM())

	for _, cookie := range []bool{false, true} {
		suffix := map[bool]string{false: "", true: "-c"}[cookie]
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Cookie: cookie,
			Body: `{
  "id": "internal-root-ca` + suffix + `",
  "name": "Internal Root CA",
  "type": "ca-bundle",
  "source": "inline",
  "certPem": ` + jsonString(string(materialtest.EncodeCert(ca.Cert))) + `
}`})
		require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
		require.Equal(t, "/api/v1/certs/internal-root-ca"+suffix, res.Header.Get("Location"))
		require.Equal(t, `"1"`, res.Header.Get("ETag"))

		res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Cookie: cookie,
			Body: `{
  "id": "edge-client-2026` + suffix + `",
  "name": "Edge gateway client",
  "type": "client-pair",
  "source": "file",
  "certPath": "` + certPath + `",
  "keyPath": "` + keyPath + `"
}`})
		require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	}

	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/internal-root-ca", Token: tok})
	require.Equal(t, http.StatusOK, res.Status)
	got := res.JSON(t)
	require.Equal(t, fingerprint(ca), got["fingerprintSha256"])
	require.Equal(t, "CN=Internal Root CA,O=LOOPZE Test", got["subject"])
	require.Equal(t, false, got["hasPrivateKey"])
	require.Equal(t, false, got["expired"])

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/edge-client-2026", Token: tok, Cookie: true})
	require.Equal(t, http.StatusOK, res.Status)
	got = res.JSON(t)
	require.Equal(t, fingerprint(client), got["fingerprintSha256"])
	require.Equal(t, certPath, got["certPath"])
	require.Equal(t, keyPath, got["keyPath"])
	require.Equal(t, true, got["hasPrivateKey"])
	require.EqualValues(t, 1, got["certCount"])

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: tok})
	require.Equal(t, http.StatusOK, res.Status)
	var list struct {
		Items []struct{ ID string } `json:"items"`
	}
	res.Decode(t, &list)
	ids := []string{}
	for _, it := range list.Items {
		ids = append(ids, it.ID)
	}
	require.Equal(t, []string{"edge-client-2026", "edge-client-2026-c", "internal-root-ca", "internal-root-ca-c"}, ids)
	requireNoSecrets(t, env, res.Body, client)
}

func jsonString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// requireNoSecrets fails when a body or the server log carries PEM armour or key bytes.
func requireNoSecrets(t *testing.T, env *apitest.Env, body []byte, pairs ...*materialtest.Cert) {
	t.Helper()
	for _, where := range []string{string(body), env.Logs.String()} {
		require.NotContains(t, where, "-----BEGIN")
		for _, p := range pairs {
			// The base64 body of the key's PEM, in pieces, must appear nowhere.
			lines := strings.Split(string(p.KeyPEM()), "\n")
			for _, l := range lines[1 : len(lines)-2] {
				require.NotContains(t, where, l)
			}
		}
	}
}

func TestCreateRules(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	other := materialtest.NewCA(t, materialtest.Options{})
	client := ca.Issue(t, materialtest.Options{})
	expired := ca.Issue(t, materialtest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})

	post := func(body any) *apitest.Response {
		return env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body})
	}
	require.Equal(t, http.StatusCreated, post(inlineCA("root", ca)).Status)

	mismatched := inlinePair("mismatch", client)
	mismatched["keyPem"] = string(other.KeyPEM())
	relative := map[string]any{"id": "rel", "name": "rel", "type": "client-pair", "source": "file", "certPath": "certs/x.crt", "keyPath": "/abs/x.key"}
	badType := inlineCA("badtype", ca)
	badType["type"] = "root-ca"
	withKey := inlineCA("cakey", ca)
	withKey["keyPem"] = string(ca.KeyPEM())
	noKey := inlinePair("nokey", client)
	delete(noKey, "keyPem")

	cases := []struct {
		name     string
		body     any
		status   int
		location string
	}{
		{"duplicate id", inlineCA("root", ca), http.StatusConflict, ""},
		{"bad slug", inlineCA("Not_A-Slug!", ca), http.StatusUnprocessableEntity, "body.id"},
		{"slug too long", inlineCA(strings.Repeat("a", 65), ca), http.StatusUnprocessableEntity, "body.id"},
		{"bad type", badType, http.StatusUnprocessableEntity, "body.type"},
		{"mismatched key", mismatched, http.StatusUnprocessableEntity, "body.keyPem"},
		{"relative path", relative, http.StatusUnprocessableEntity, "body.certPath"},
		{"key on a ca-bundle", withKey, http.StatusUnprocessableEntity, "body.keyPem"},
		{"pair without key", noKey, http.StatusUnprocessableEntity, "body.keyPem"},
		{"garbage pem", map[string]any{"id": "g", "name": "g", "type": "ca-bundle", "source": "inline", "certPem": "hello"}, http.StatusUnprocessableEntity, "body.certPem"},
		{"missing name", map[string]any{"id": "n", "type": "ca-bundle", "source": "inline", "certPem": string(materialtest.EncodeCert(ca.Cert))}, http.StatusUnprocessableEntity, "body.name"},
		{"unknown field", `{"id":"u","name":"u","type":"ca-bundle","source":"inline","pem":"x"}`, http.StatusUnprocessableEntity, ""},
		{"malformed json", `{"id":`, http.StatusBadRequest, ""},
		{"material over 256 KiB", map[string]any{"id": "big", "name": "big", "type": "ca-bundle", "source": "inline", "certPem": strings.Repeat("A", 300<<10)}, http.StatusUnprocessableEntity, "body.certPem"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := post(c.body)
			require.Equal(t, c.status, res.Status, "%s", res.Body)
			body := res.JSON(t)
			require.Equal(t, http.StatusText(c.status), body["error"])
			require.NotEmpty(t, body["message"])
			if c.location != "" {
				require.Contains(t, string(res.Body), `"location":"`+c.location+`"`)
			}
			require.NotContains(t, string(res.Body), "-----BEGIN")
		})
	}

	t.Run("expired is saved with a warning", func(t *testing.T) {
		res := post(inlinePair("old-client", expired))
		require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
		body := res.JSON(t)
		require.Equal(t, true, body["expired"])
		require.Contains(t, string(res.Body), "expired")
		require.NotEmpty(t, body["warnings"])
		require.Contains(t, env.Logs.String(), "certificate warning")
	})

	t.Run("body over 1 MiB", func(t *testing.T) {
		res := post(`{"id":"huge","name":"` + strings.Repeat("x", 1<<20+10) + `"}`)
		require.Equal(t, http.StatusRequestEntityTooLarge, res.Status)
		require.Equal(t, "Request Entity Too Large", res.JSON(t)["error"])
	})
	requireNoSecrets(t, env, nil, client, other, expired)
}

func TestAuthAndTenancy(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	editorA := env.Token(t, "tenant-a", "editor")
	viewerA := env.Token(t, "tenant-a", "viewer")
	adminB := env.Token(t, "tenant-b", "admin")

	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editorA, Body: inlineCA("shared-name", ca)})
	require.Equal(t, http.StatusCreated, res.Status)

	// No token, a bad token, an expired token: 401.
	require.Equal(t, http.StatusUnauthorized, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs"}).Status)
	require.Equal(t, http.StatusUnauthorized, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: "not.a.jwt"}).Status)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: editorA + "x"})
	require.Equal(t, http.StatusUnauthorized, res.Status)
	require.Equal(t, "Unauthorized", res.JSON(t)["error"])

	// Viewer reads, cannot write.
	require.Equal(t, http.StatusOK, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/shared-name", Token: viewerA}).Status)
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: viewerA, Body: inlineCA("v", ca)})
	require.Equal(t, http.StatusForbidden, res.Status)
	require.Equal(t, "Forbidden", res.JSON(t)["error"])
	require.Equal(t, http.StatusForbidden, env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/shared-name", Token: viewerA}).Status)
	require.Equal(t, http.StatusForbidden, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: viewerA, Body: inlineCA("v", ca)}).Status)

	// Another tenant's entry is a plain 404, for reads and writes alike; the same ID is free there.
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		require.Equal(t, http.StatusNotFound, env.Do(t, apitest.Request{Method: m, Path: "/api/v1/certs/shared-name", Token: adminB}).Status, m)
	}
	require.Equal(t, http.StatusNotFound, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/shared-name/references", Token: adminB}).Status)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: adminB})
	require.Equal(t, `{"items":[]}`, strings.TrimSpace(string(res.Body)))
	require.Equal(t, http.StatusCreated, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: adminB, Body: inlineCA("shared-name", ca)}).Status)

	// Cookie writes from a foreign Origin are refused; without Origin (curl) they are served.
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editorA, Cookie: true,
		Body: inlineCA("csrf", ca), Headers: map[string]string{"Origin": "https://evil.example"}})
	require.Equal(t, http.StatusForbidden, res.Status, "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editorA, Cookie: true, Body: inlineCA("csrf", ca)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	// A bearer token from a foreign origin is fine: no ambient credential is involved.
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editorA,
		Body: inlineCA("bearer-x", ca), Headers: map[string]string{"Origin": "https://elsewhere.example"}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
}

func TestValidateStoresNothing(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	client := ca.Issue(t, materialtest.Options{Key: materialtest.RSA1024})

	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: inlinePair("probe", client)})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	var v struct {
		Valid    bool `json:"valid"`
		Metadata struct {
			FingerprintSHA256 string `json:"fingerprintSha256"`
			KeyAlgorithm      string `json:"keyAlgorithm"`
		} `json:"metadata"`
		Warnings []map[string]string `json:"warnings"`
		Errors   []map[string]string `json:"errors"`
	}
	res.Decode(t, &v)
	require.True(t, v.Valid)
	require.Equal(t, fingerprint(client), v.Metadata.FingerprintSHA256)
	require.Equal(t, "RSA-1024", v.Metadata.KeyAlgorithm)
	require.NotEmpty(t, v.Warnings, "RSA under 2048 bits warns")
	require.Empty(t, v.Errors)

	bad := inlinePair("probe", client)
	bad["keyPem"] = string(ca.KeyPEM())
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: bad})
	require.Equal(t, http.StatusOK, res.Status)
	res.Decode(t, &v)
	require.False(t, v.Valid)
	require.Equal(t, "body.keyPem", v.Errors[0]["location"])

	require.Equal(t, http.StatusNotFound, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/probe", Token: tok}).Status)
	var n int
	require.NoError(t, env.Pool.QueryRow(t.Context(), `SELECT count(*) FROM tenants`).Scan(&n))
	require.Zero(t, n, "validate must not even create the tenant")
}

func TestUpdateAndDelete(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	first := ca.Issue(t, materialtest.Options{CommonName: "first"})
	renewed := ca.Issue(t, materialtest.Options{CommonName: "renewed"})

	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlinePair("edge", first)})
	require.Equal(t, http.StatusCreated, res.Status)
	path := "/api/v1/certs/edge"

	// PUT of the name only keeps the material and its fingerprint.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: path, Token: tok, Body: map[string]any{"name": "Edge client", "notes": "rotated by hand"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got := res.JSON(t)
	require.Equal(t, "Edge client", got["name"])
	require.Equal(t, "rotated by hand", got["notes"])
	require.Equal(t, fingerprint(first), got["fingerprintSha256"])
	require.Equal(t, `"2"`, res.Header.Get("ETag"))

	// A stale If-Match is refused; the current one is honoured.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: path, Token: tok, Body: map[string]any{"notes": "x"}, Headers: map[string]string{"If-Match": `"1"`}})
	require.Equal(t, http.StatusPreconditionFailed, res.Status)
	require.Equal(t, "Precondition Failed", res.JSON(t)["error"])

	// New PEM (a renewed certificate with its key) changes the fingerprint.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: path, Token: tok, Headers: map[string]string{"If-Match": `"2"`},
		Body: map[string]any{"certPem": string(renewed.ChainPEM()), "keyPem": string(renewed.KeyPEM())}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, fingerprint(renewed), res.JSON(t)["fingerprintSha256"])

	// A certificate alone that does not match the stored key is refused, naming the key.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: path, Token: tok, Body: map[string]any{"certPem": string(first.ChainPEM())}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status)
	require.Contains(t, string(res.Body), "body.keyPem")

	// The ID is immutable.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: path, Token: tok, Body: map[string]any{"id": "other"}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status)
	require.Contains(t, string(res.Body), "body.id")

	// PUT to an unknown ID creates it, as the OPC UA note of the seed relies on.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/plant-7-opcua", Token: tok, Body: inlinePair("plant-7-opcua", first)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Equal(t, "/api/v1/certs/plant-7-opcua", res.Header.Get("Location"))

	// DELETE with a stale ETag is 412, then 204, then 404.
	require.Equal(t, http.StatusPreconditionFailed, env.Do(t, apitest.Request{Method: http.MethodDelete, Path: path, Token: tok, Headers: map[string]string{"If-Match": `"1"`}}).Status)
	require.Equal(t, http.StatusBadRequest, env.Do(t, apitest.Request{Method: http.MethodDelete, Path: path, Token: tok, Headers: map[string]string{"If-Match": `nonsense`}}).Status)
	res = env.Do(t, apitest.Request{Method: http.MethodDelete, Path: path, Token: tok})
	require.Equal(t, http.StatusNoContent, res.Status, "%s", res.Body)
	require.Equal(t, http.StatusNotFound, env.Do(t, apitest.Request{Method: http.MethodDelete, Path: path, Token: tok}).Status)
	require.Equal(t, http.StatusNotFound, env.Do(t, apitest.Request{Method: http.MethodGet, Path: path, Token: tok}).Status)
	requireNoSecrets(t, env, nil, first, renewed)
}

func TestListPagingAndFilters(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "viewer")
	edit := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{NotAfter: time.Now().Add(3650 * 24 * time.Hour)})
	soon := ca.Issue(t, materialtest.Options{NotAfter: time.Now().Add(10 * 24 * time.Hour)})
	late := ca.Issue(t, materialtest.Options{NotAfter: time.Now().Add(300 * 24 * time.Hour)})
	for i := range 7 {
		c := late
		if i%3 == 0 {
			c = soon
		}
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: edit, Body: inlinePair(fmt.Sprintf("e%02d", i), c)})
		require.Equal(t, http.StatusCreated, res.Status)
	}
	require.Equal(t, http.StatusCreated, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: edit, Body: inlineCA("zz-ca", ca)}).Status)

	type page struct {
		Items []struct {
			ID           string `json:"id"`
			DaysToExpiry int    `json:"daysToExpiry"`
		} `json:"items"`
		NextCursor string `json:"nextCursor"`
	}
	var all []string
	cursor := ""
	for range 10 {
		res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs?limit=3&cursor=" + cursor, Token: tok})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		var p page
		res.Decode(t, &p)
		for _, it := range p.Items {
			all = append(all, it.ID)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	require.Equal(t, []string{"e00", "e01", "e02", "e03", "e04", "e05", "e06", "zz-ca"}, all)

	var p page
	env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs?type=ca-bundle", Token: tok}).Decode(t, &p)
	require.Len(t, p.Items, 1)
	env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs?expiringWithinDays=30", Token: tok}).Decode(t, &p)
	require.Len(t, p.Items, 3)
	require.InDelta(t, 9, p.Items[0].DaysToExpiry, 1)
	env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs?source=file", Token: tok}).Decode(t, &p)
	require.Empty(t, p.Items)

	for _, q := range []string{"limit=0", "limit=501", "type=root", "cursor=%21%21", "expiringWithinDays=-5"} {
		res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs?" + q, Token: tok})
		require.Contains(t, []int{http.StatusBadRequest, http.StatusUnprocessableEntity}, res.Status, "%s: %s", q, res.Body)
		require.NotEmpty(t, res.JSON(t)["error"])
	}
}

// TestNoPEMAtRest proves inline material is sealed: a pg_dump of the database holds no PEM.
func TestNoPEMAtRest(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	client := ca.Issue(t, materialtest.Options{})
	require.Equal(t, http.StatusCreated, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlinePair("c", client)}).Status)
	require.Equal(t, http.StatusCreated, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlineCA("r", ca)}).Status)

	dump := string(testdbDump(t, env.DBURL))
	require.Contains(t, dump, "COPY public.entries")
	require.NotContains(t, dump, "-----BEGIN")
	der := base64.StdEncoding.EncodeToString(client.Cert.Raw)
	require.NotContains(t, dump, der[:40])
}

// TestFileRootsConfineTenants: with LOOPZE_FILE_ROOTS set, one tenant cannot point an
// entry at another tenant's key files, not even through a symlink.
func TestFileRootsConfineTenants(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	env := apitest.New(t, apitest.Options{FileRoots: base + "/{tenant}"})
	ca := materialtest.NewCA(t, materialtest.Options{})
	c := ca.Issue(t, materialtest.Options{})
	aCert := apitest.WriteFile(t, base, "tenant-a/edge.crt", c.ChainPEM())
	aKey := apitest.WriteFile(t, base, "tenant-a/edge.key", c.KeyPEM())
	bDir := base + "/tenant-b"
	require.NoError(t, os.MkdirAll(bDir, 0o700))
	require.NoError(t, os.Symlink(aKey, bDir+"/stolen.key"))
	require.NoError(t, os.Symlink(aCert, bDir+"/stolen.crt"))

	pair := func(id, cert, key string) map[string]any {
		return map[string]any{"id": id, "name": id, "type": "client-pair", "source": "file", "certPath": cert, "keyPath": key}
	}
	tokA, tokB := env.Token(t, "tenant-a", "editor"), env.Token(t, "tenant-b", "editor")
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tokA, Body: pair("edge", aCert, aKey)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)

	for _, p := range [][2]string{{aCert, aKey}, {bDir + "/stolen.crt", bDir + "/stolen.key"}} {
		res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tokB, Body: pair("theft", p[0], p[1])})
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
		require.Contains(t, string(res.Body), "body.certPath")
		require.Contains(t, string(res.Body), "body.keyPath")
		require.NotContains(t, string(res.Body), "-----BEGIN")
	}
}

func TestPutChangesTypeAndSource(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, tempRoots())
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	c := ca.Issue(t, materialtest.Options{})
	dir := t.TempDir()
	certPath := apitest.WriteFile(t, dir, "c.crt", c.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "c.key", c.KeyPEM())
	require.Equal(t, http.StatusCreated, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlinePair("p", c)}).Status)

	// client-pair to server-pair keeps the stored material.
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/p", Token: tok, Body: map[string]any{"type": "server-pair"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, "server-pair", res.JSON(t)["type"])
	require.Equal(t, fingerprint(c), res.JSON(t)["fingerprintSha256"])

	// A source change needs the new material...
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/p", Token: tok, Body: map[string]any{"source": "file"}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), "body.source")
	// ...and with it, the entry becomes file-sourced.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/p", Token: tok, Body: map[string]any{"source": "file", "certPath": certPath, "keyPath": keyPath}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got := res.JSON(t)
	require.Equal(t, "file", got["source"])
	require.Equal(t, certPath, got["certPath"])

	// Notes only keeps the paths.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/p", Token: tok, Body: map[string]any{"notes": "from cert-manager"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, keyPath, res.JSON(t)["keyPath"])
}

// TestDeleteLeavesFilesAlone: deleting a file-sourced entry removes the store entry only;
// the certificate and key files stay on disk, byte for byte.
func TestDeleteLeavesFilesAlone(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, tempRoots())
	tok := env.Token(t, "acme", "editor")
	c := materialtest.NewCA(t, materialtest.Options{}).Issue(t, materialtest.Options{})
	dir := t.TempDir()
	certPath := apitest.WriteFile(t, dir, "edge.crt", c.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "edge.key", c.KeyPEM())
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok,
		Body: map[string]any{"id": "edge", "name": "edge", "type": "client-pair", "source": "file", "certPath": certPath, "keyPath": keyPath}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Equal(t, http.StatusNoContent, env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/edge", Token: tok}).Status)

	gotCert, err := os.ReadFile(certPath)
	require.NoError(t, err)
	require.Equal(t, c.ChainPEM(), gotCert)
	gotKey, err := os.ReadFile(keyPath)
	require.NoError(t, err)
	require.Equal(t, c.KeyPEM(), gotKey)
}

// TestValuesPostgreSQLCannotStore: NUL and other control characters are refused with a
// 422 naming the field, never passed on to the database to fail as a 500.
func TestValuesPostgreSQLCannotStore(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{})
	for field, value := range map[string]string{"name": "a\x00b", "notes": "a\x00b"} {
		body := inlineCA("nul-"+field, ca)
		body[field] = value
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body})
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s: %s", field, res.Body)
		require.Contains(t, string(res.Body), `"location":"body.`+field+`"`)
	}
	body := inlineCA("bell", ca)
	body["name"] = "ring\x07"
	require.Equal(t, http.StatusUnprocessableEntity, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body}).Status)
	body = inlineCA("multiline-notes", ca)
	body["notes"] = "line one\n\tline two"
	require.Equal(t, http.StatusCreated, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body}).Status)

	for name, doc := range map[string]string{
		"NUL in a label":           `{"flows":[{"id":"f","label":"x\u0000","nodes":[]}]}`,
		"NUL in a credential":      `{"flows":[{"id":"f","nodes":[{"id":"n","type":"tcp-out","credentials":{"p":"a\u0000b"}}]}]}`,
		"NUL in an extra field":    `{"flows":[{"id":"f","nodes":[{"id":"n","type":"tcp-out","host":"h\u0000"}]}]}`,
		"bytes that are not UTF-8": "{\"flows\":[{\"id\":\"f\",\"nodes\":[{\"id\":\"n\",\"type\":\"tcp-out\",\"host\":\"\xff\xfe\"}]}]}",
	} {
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok, Body: []byte(doc)})
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s: %s", name, res.Body)
		require.Equal(t, "Unprocessable Entity", res.JSON(t)["error"], name)
	}
	// Searching for a NUL finds nothing rather than failing.
	var res *apitest.Response
	for _, q := range []string{"%00", "%ff%fe"} {
		res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs?q=" + q, Token: tok})
		require.Equal(t, http.StatusOK, res.Status, "%s: %s", q, res.Body)
		require.JSONEq(t, `{"items":[]}`, string(res.Body))
	}

	// An escaped backslash before "u0000" is text, not a NUL.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok,
		Body: []byte(`{"flows":[{"id":"f","nodes":[{"id":"n","type":"tcp-out","host":"C:\\u0000"}]}]}`)})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
}

// TestDeceptiveCharactersInNamesAndNotes: bidirectional overrides and the Unicode line
// separators make a name or note display other than it reads; both fields refuse them
// with a 422 naming the field, on create and on update. Ordinary line breaks in notes and
// non-Latin scripts stay welcome.
func TestDeceptiveCharactersInNamesAndNotes(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	for _, c := range []struct{ field, value string }{
		{"name", "invoice\u202Efdp.exe"}, {"name", "two\u2028lines"}, {"name", "para\u2029graph"},
		{"name", "isolate\u2066x\u2069"}, {"name", "mark\u200F"},
		{"notes", "rotated by \u202Enimda"}, {"notes", "a\u2028b"},
	} {
		body := inlineCA("deceptive", ca)
		body[c.field] = c.value
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body})
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s %q: %s", c.field, c.value, res.Body)
		require.Contains(t, string(res.Body), `"location":"body.`+c.field+`"`)
		require.NotContains(t, string(res.Body), c.value, "the refusal does not echo the text")
	}
	body := inlineCA("fine", ca)
	body["name"], body["notes"] = "Корневой ЦС — شهادة", "line one\nline two\ttabbed"
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/fine", Token: tok, Body: map[string]any{"name": "x\u202Ey"}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
}
