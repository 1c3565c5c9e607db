package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// TestStoreAndInlineCoexistPerNode: one deploy mixes every way a node may name its
// material (a stored reference shared by two nodes in two flows, inline PEM, direct
// files), and every node's connection init presents its own certificate in a real
// handshake.
func TestStoreAndInlineCoexistPerNode(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	dir := t.TempDir()
	stored := te.ca.Issue(t, materialtest.Options{CommonName: "stored"})
	inline := te.ca.Issue(t, materialtest.Options{CommonName: "inline"})
	files := te.ca.Issue(t, materialtest.Options{CommonName: "files"})
	post(t, te.env, te.tok, inlinePair("edge-client", stored))
	caFile := apitest.WriteFile(t, dir, "ca.pem", te.ca.CertPEM())

	res := deploy(t, te.env, te.tok, workspaceOf(
		flow("line-1",
			node("by-ref", "tcp-out", obj{"tls": obj{"caBundleRef": "root-ca", "clientCertRef": "edge-client", "serverName": "localhost"}}),
			node("by-inline", "tcp-out", obj{"tls": obj{"caBundlePem": string(te.ca.CertPEM()),
				"clientCertPem": string(inline.ChainPEM()), "clientKeyPem": string(inline.KeyPEM()), "serverName": "localhost"}}),
			node("by-files", "mqtt-broker", obj{"tls": obj{"caBundleFile": caFile,
				"clientCertFile": apitest.WriteFile(t, dir, "c.crt", files.ChainPEM()),
				"clientKeyFile":  apitest.WriteFile(t, dir, "c.key", files.KeyPEM()), "serverName": "localhost"}})),
		flow("line-2",
			node("also-by-ref", "http-request", obj{"tls": obj{"caBundleFile": caFile, "clientCertRef": "edge-client", "serverName": "localhost"}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.EqualValues(t, 3, res.JSON(t)["references"])

	for _, c := range []struct {
		flow, node string
		want       *materialtest.Cert
	}{
		{"line-1", "by-ref", stored},
		{"line-1", "by-inline", inline},
		{"line-1", "by-files", files},
		{"line-2", "also-by-ref", stored},
	} {
		cfg, err := te.env.Workspace.NodeTLSConfig(context.Background(), "acme", c.flow, c.node)
		require.NoError(t, err, c.node)
		require.Equal(t, fingerprint(c.want), dial(t, te.addr, cfg).presented(t), c.node)
	}
}

// TestLoggingHygiene sends a private key through every way in, accepted and refused
// (a stored pair, a mismatched pair, a key in the certificate field, a damaged key, a
// probe, an update, a file entry pointing at the key file, node credentials and inline
// TLS PEM in a deploy, a refused deploy, connection init), with the server logging at
// debug level: no log line and no response carries PEM armour or a line of the key.
func TestLoggingHygiene(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	env, tok := te.env, te.tok
	dir := t.TempDir()
	pair := te.ca.Issue(t, materialtest.Options{CommonName: "edge"})
	next := te.ca.Issue(t, materialtest.Options{CommonName: "edge-next"})
	other := te.ca.Issue(t, materialtest.Options{Key: materialtest.RSA2048})
	keyPEM := string(pair.KeyPEM())
	keyFile := apitest.WriteFile(t, dir, "edge.key", pair.KeyPEM())
	// A key with one base64 character changed no longer parses, yet every other line
	// is the key's own.
	lines := strings.Split(keyPEM, "\n")
	lines[1] = flipChar(lines[1])
	damaged := strings.Join(lines, "\n")

	do := func(method, path string, body any) *apitest.Response {
		res := env.Do(t, apitest.Request{Method: method, Path: path, Token: tok, Body: body})
		require.Less(t, res.Status, 500, "%s %s: %s", method, path, res.Body)
		requireNoSecrets(t, env, res.Body, pair, next, other)
		return res
	}
	withKey := func(id, key string) obj {
		p := inlinePair(id, pair)
		p["keyPem"] = key
		return p
	}
	keyAsCert := inlinePair("key-as-cert", pair)
	keyAsCert["certPem"] = keyPEM

	require.Equal(t, http.StatusCreated, do(http.MethodPost, "/api/v1/certs", inlinePair("edge", pair)).Status)
	require.Equal(t, http.StatusUnprocessableEntity, do(http.MethodPost, "/api/v1/certs", withKey("mismatch", string(other.KeyPEM()))).Status)
	require.Equal(t, http.StatusUnprocessableEntity, do(http.MethodPost, "/api/v1/certs", keyAsCert).Status)
	require.Equal(t, http.StatusUnprocessableEntity, do(http.MethodPost, "/api/v1/certs", withKey("damaged", damaged)).Status)
	require.Equal(t, http.StatusOK, do(http.MethodPost, "/api/v1/certs/validate", withKey("probe", damaged)).Status)
	require.Equal(t, http.StatusOK, do(http.MethodPut, "/api/v1/certs/edge",
		obj{"certPem": string(next.ChainPEM()), "keyPem": string(next.KeyPEM())}).Status)
	require.Equal(t, http.StatusUnprocessableEntity, do(http.MethodPost, "/api/v1/certs", obj{"id": "key-file", "name": "k",
		"type": "client-pair", "source": "file", "certPath": keyFile, "keyPath": keyFile}).Status)

	res := do(http.MethodPut, "/api/v1/flows", workspaceOf(flow("line-1",
		node("n1", "tcp-out", obj{"credentials": obj{"privateKey": keyPEM}, "tls": obj{"caBundleRef": "root-ca",
			"clientCertPem": string(pair.ChainPEM()), "clientKeyPem": keyPEM, "serverName": "localhost"}}))))
	require.Equal(t, http.StatusOK, res.Status)
	res = do(http.MethodPut, "/api/v1/flows", workspaceOf(flow("line-1",
		node("n1", "tcp-out", obj{"tls": obj{"clientCertPem": string(pair.ChainPEM()), "clientKeyPem": string(other.KeyPEM())}}),
		node("n2", "tcp-out", obj{"tls": obj{"clientCertPem": string(pair.ChainPEM()), "clientKeyPem": damaged}}))))
	require.Equal(t, http.StatusUnprocessableEntity, res.Status)
	do(http.MethodGet, "/api/v1/flows", nil)
	do(http.MethodGet, "/api/v1/flows/line-1/nodes/n1/tls", nil)
	do(http.MethodGet, "/api/v1/certs/edge", nil)

	cfg, err := env.Workspace.NodeTLSConfig(context.Background(), "acme", "line-1", "n1")
	require.NoError(t, err)
	require.Equal(t, fingerprint(pair), dial(t, te.addr, cfg).presented(t))

	logs := env.Logs.String()
	require.Contains(t, logs, `"msg":"request"`, "the requests were logged")
	require.Contains(t, logs, `"level":"DEBUG"`, "the server logged at debug level")
	requireNoSecrets(t, env, nil, pair, next, other)
}

// flipChar changes the middle character of a base64 line to another base64 character.
func flipChar(s string) string {
	b := []byte(s)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestExpiredIsAWarningEverywhere: expired and not-yet-valid material is probed, saved
// inline and from files, updated to, deployed by reference and by direct file, and used at
// connection init, each time with a warning and never a refusal; the listing shows
// notAfter and expired for monitoring to act on.
func TestExpiredIsAWarningEverywhere(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	env, tok := te.env, te.tok
	dir := t.TempDir()
	now := time.Now()
	expired := te.ca.Issue(t, materialtest.Options{CommonName: "expired", NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	future := te.ca.Issue(t, materialtest.Options{CommonName: "future", NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(72 * time.Hour)})
	current := te.ca.Issue(t, materialtest.Options{CommonName: "current"})
	oldCA := materialtest.NewCA(t, materialtest.Options{NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})

	var probe struct {
		Valid    bool
		Warnings []struct{ Location, Message string }
	}
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: inlinePair("probe", expired)})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res.Decode(t, &probe)
	require.True(t, probe.Valid)
	require.NotEmpty(t, probe.Warnings)

	saved := func(res *apitest.Response, status int) {
		t.Helper()
		require.Equal(t, status, res.Status, "%s", res.Body)
		require.NotEmpty(t, res.JSON(t)["warnings"], "%s", res.Body)
	}
	saved(env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlinePair("inline-expired", expired)}), http.StatusCreated)
	saved(env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlinePair("inline-future", future)}), http.StatusCreated)
	saved(env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: obj{"id": "file-expired", "name": "f",
		"type": "client-pair", "source": "file",
		"certPath": apitest.WriteFile(t, dir, "old.crt", expired.ChainPEM()), "keyPath": apitest.WriteFile(t, dir, "old.key", expired.KeyPEM())}}), http.StatusCreated)
	saved(env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlineCA("old-ca", oldCA)}), http.StatusCreated)
	post(t, env, tok, inlinePair("rotated-back", current))
	saved(env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/rotated-back", Token: tok,
		Body: obj{"certPem": string(expired.ChainPEM()), "keyPem": string(expired.KeyPEM())}}), http.StatusOK)

	res = deploy(t, env, tok, workspaceOf(flow("line-1",
		node("by-ref", "tcp-out", obj{"tls": obj{"caBundleRef": "old-ca", "clientCertRef": "inline-expired"}}),
		node("by-file-entry", "tcp-out", obj{"tls": obj{"clientCertRef": "file-expired"}}),
		node("by-files", "tcp-out", obj{"tls": obj{"caBundleFile": apitest.WriteFile(t, dir, "old-ca.pem", oldCA.CertPEM())}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	for _, n := range []string{"by-ref", "by-file-entry", "by-files"} {
		_, err := env.Workspace.NodeTLSConfig(context.Background(), "acme", "line-1", n)
		require.NoError(t, err, n)
		res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows/line-1/nodes/" + n + "/tls", Token: tok})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		require.NotContains(t, string(res.Body), `"error":"`, n)
	}

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: tok})
	require.Equal(t, http.StatusOK, res.Status)
	var list struct {
		Items []struct {
			ID       string
			NotAfter time.Time
			Expired  bool
		}
	}
	res.Decode(t, &list)
	seen := map[string]bool{}
	for _, it := range list.Items {
		require.False(t, it.NotAfter.IsZero(), it.ID)
		require.Equal(t, it.NotAfter.Before(now), it.Expired, it.ID)
		seen[it.ID] = it.Expired
	}
	require.Equal(t, map[string]bool{"root-ca": false, "inline-expired": true, "inline-future": false, "file-expired": true,
		"old-ca": true, "rotated-back": true}, seen)
}
