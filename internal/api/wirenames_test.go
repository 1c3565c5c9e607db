package api_test

import (
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

// The JSON names clients and the operator documentation read. The Go types behind them
// may move fields around; these names may not change.
var (
	metadataNames = []string{"fingerprintSha256", "subject", "issuer", "serialNumber", "notBefore", "notAfter",
		"dnsNames", "certCount", "keyAlgorithm", "hasPrivateKey"}
	expiryNames = []string{"expired", "daysToExpiry"}
	entryNames  = slices.Concat([]string{"id", "name", "type", "source", "notes", "certPath", "keyPath", "passphraseFile",
		"referenceCount", "version", "createdAt", "updatedAt"}, metadataNames, expiryNames)
	versionNames = slices.Concat([]string{"version", "action", "entryVersion", "restoredFrom", "changedAt", "changedBy",
		"name", "type", "source", "notes", "certPath", "keyPath"}, metadataNames)
)

func namesOf(t *testing.T, v any) []string {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "not an object: %v", v)
	return slices.Sorted(maps.Keys(m))
}

func sorted(names ...[]string) []string { return slices.Sorted(slices.Values(slices.Concat(names...))) }

func without(names []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(drop, n) })
}

// TestResponseFieldNames: an entry (got, listed, saved), a version of it and what validate
// derives carry exactly the JSON names they always had, and the metadata an entry shows is
// what validate derives from the same material.
func TestResponseFieldNames(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "editor")
	ca := mt.NewCA(t, mt.Options{CommonName: "Names Root"})
	pair := ca.Issue(t, mt.Options{CommonName: "names-edge", DNSNames: []string{"edge.example"}})
	const pass = "names passphrase"
	dir := t.TempDir()
	certPath := apitest.WriteFile(t, dir, "edge.crt", pair.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "edge.key", mt.ScryptKeyPEM(t, pair.Key, pass, 1<<10, 8, 1))
	passPath := apitest.WriteFile(t, dir, "edge.pass", []byte(pass+"\n"))

	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlineCA("names-ca", ca)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: map[string]any{
		"id": "names-edge", "name": "Edge", "type": "client-pair", "source": "file",
		"certPath": certPath, "keyPath": keyPath, "passphraseFile": passPath, "verifyWith": "names-ca"}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Equal(t, sorted(entryNames, []string{"warnings", "verification"}), namesOf(t, res.JSON(t)))

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/names-edge", Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	entry := res.JSON(t)
	require.Equal(t, sorted(entryNames), namesOf(t, entry))

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	items := res.JSON(t)["items"].([]any)
	require.Len(t, items, 2)
	require.Equal(t, sorted(without(entryNames, "certPath", "keyPath", "passphraseFile")), namesOf(t, items[0]))
	require.Equal(t, sorted(entryNames), namesOf(t, items[1]))

	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/names-edge", Token: tok, Body: map[string]any{"notes": "renewed"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/names-edge/versions/1/restore", Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/names-edge/versions/3", Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	version := res.JSON(t)
	require.Equal(t, sorted(versionNames), namesOf(t, version))
	require.EqualValues(t, 1, version["restoredFrom"])

	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: map[string]any{
		"name": "Edge", "type": "client-pair", "source": "file", "certPath": certPath, "keyPath": keyPath, "passphraseFile": passPath}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	meta := res.JSON(t)["metadata"]
	require.Equal(t, sorted(metadataNames, expiryNames), namesOf(t, meta))

	for _, name := range metadataNames {
		require.Equal(t, meta.(map[string]any)[name], entry[name], name)
		require.Equal(t, entry[name], version[name], name)
	}
	require.Equal(t, meta.(map[string]any)["expired"], entry["expired"])
	require.Equal(t, []any{"edge.example"}, entry["dnsNames"])
	require.Equal(t, true, entry["hasPrivateKey"])
}
