package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// errorLocations returns the locations of a 422's error details.
func errorLocations(t *testing.T, res *apitest.Response) []string {
	t.Helper()
	var body struct {
		Errors []struct{ Location, Message string } `json:"errors"`
	}
	res.Decode(t, &body)
	var out []string
	for _, e := range body.Errors {
		out = append(out, e.Location)
	}
	return out
}

// A few kilobytes of number literals that jsonb writes back in full (1e131071 is 131,072
// digits) were stored and came back as tens of megabytes, in GET and in the export file.
func TestDeployRefusesNumberAmplification(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	nums := strings.TrimSuffix(strings.Repeat("1e131071,", 300), ",")
	body := `{"flows":[{"id":"f","nodes":[{"id":"n","type":"function","x":[` + nums + `]}]}]}`
	require.Less(t, len(body), 2800, "the body of the report: about 2.7 KB")

	res := deploy(t, env, tok, body)
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Equal(t, []string{"body.flows[0].nodes[0].x[0]"}, errorLocations(t, res))
	require.Contains(t, string(res.Body), "64-bit float")

	// In float64 range, but 301 digits once stored: refused too.
	res = deploy(t, env, tok, `{"flows":[{"id":"f","nodes":[{"id":"n","type":"function","cfg":{"max":1e300}}]}]}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Equal(t, []string{"body.flows[0].nodes[0].cfg.max"}, errorLocations(t, res))

	got := getFlows(t, env, tok)
	require.JSONEq(t, `{"flows":[]}`, string(got.Body), "nothing of a refused deploy is stored")

	// Ordinary numbers round-trip as sent.
	res = deploy(t, env, tok, `{"flows":[{"id":"f","nodes":[{"id":"n","type":"function","x":120,"y":-40.5,"ratio":0.30000000000000004,"ts":1764633600000}]}]}`)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got = getFlows(t, env, tok)
	require.JSONEq(t, `{"flows":[{"id":"f","nodes":[{"id":"n","type":"function","x":120,"y":-40.5,"ratio":0.30000000000000004,"ts":1764633600000}]}]}`, string(got.Body))
}

// PEM in free text was stored verbatim and shown in clear to viewers.
func TestPEMRefusedInFreeText(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	viewer := env.Token(t, "acme", "viewer")
	ca := materialtest.NewCA(t, materialtest.Options{})
	pair := ca.Issue(t, materialtest.Options{})
	key := string(pair.KeyPEM())

	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok,
		Body: obj{"id": "root", "name": "Root", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM()), "notes": "backup of the key:\n" + key}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Equal(t, []string{"body.notes"}, errorLocations(t, res))
	require.Contains(t, string(res.Body), "keyPem")
	require.NotContains(t, string(res.Body), "PRIVATE KEY-----")

	post(t, env, tok, inlineCA("root", ca))
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok, Body: obj{"notes": key}})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Equal(t, []string{"body.notes"}, errorLocations(t, res))

	for _, c := range []struct {
		ws  any
		loc string
	}{
		{obj{"flows": []any{obj{"id": "f", "label": key, "nodes": []any{}}}}, "body.flows[0].label"},
		{workspaceOf(flow("f", node("n", "tcp-out", obj{"privateKey": key}))), "body.flows[0].nodes[0].privateKey"},
		{workspaceOf(flow("f", node("n", "tcp-out", obj{"config": obj{"auth": obj{"keys": []any{key}}}}))), "body.flows[0].nodes[0].config.auth.keys[0]"},
		{workspaceOf(flow("f", node("n", "tcp-out", obj{"tls": obj{"clientKeyPEM": key}}))), "body.flows[0].nodes[0].tls.clientKeyPEM"},
	} {
		res := deploy(t, env, tok, c.ws)
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
		require.Equal(t, []string{c.loc}, errorLocations(t, res))
		require.Contains(t, string(res.Body), "credentials")
		require.NotContains(t, string(res.Body), "PRIVATE KEY-----")
	}
	// A mis-cased tls field without PEM is named for what it is.
	res = deploy(t, env, tok, workspaceOf(flow("f", node("n", "tcp-out", obj{"tls": obj{"clientKeyPEM": "x"}}))))
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), "did you mean clientKeyPem?")

	// Where PEM belongs it is taken, sealed and never shown.
	res = deploy(t, env, tok, workspaceOf(flow("f", node("n", "tcp-out", obj{
		"tls":         obj{"clientCertPem": string(pair.ChainPEM()), "clientKeyPem": key},
		"credentials": obj{"sshKey": key}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	for _, who := range []string{viewer, tok} {
		got := getFlows(t, env, who)
		require.NotContains(t, string(got.Body), "-----BEGIN")
		res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/root", Token: who})
		require.NotContains(t, string(res.Body), "-----BEGIN")
	}
	require.NotContains(t, env.Logs.String(), "PRIVATE KEY-----")
}

// The streamed GET /api/v1/flows says what the workspace model read from the same saved
// document says once re-encoded (Document.Workspace, what the OPC UA migration changes and
// deploys back), markers included, for nodes with and without stored values; the model
// deployed back keeps every stored value.
func TestStreamedWorkspaceMatchesDecoded(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	pair := ca.Issue(t, materialtest.Options{})
	post(t, env, tok, inlineCA("root", ca))
	res := deploy(t, env, tok, workspaceOf(
		flow("a",
			node("n1", "tcp-out", obj{"x": 10, "y": 20, "z": "a", "wires": []any{[]any{"n2"}},
				"tls":         obj{"caBundleRef": "root", "clientCertPem": string(pair.ChainPEM()), "clientKeyPem": string(pair.KeyPEM()), "alpnProtocol": "h2"},
				"credentials": obj{"user": "u", "password": "p"}}),
			node("n2", "function", obj{"func": "return msg;", "config": obj{"tls": obj{"id": "not a node"}, "nodes": []any{obj{"id": "n1"}}}}),
			node("n3", "http-request", obj{"credentials": obj{"token": "t"}})),
		flow("b", node("n4", "mqtt-broker", obj{"tls": obj{"caBundlePem": string(ca.CertPEM())}})),
		obj{"id": "c", "nodes": []any{}, "info": "empty"}))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	saved, err := env.Workspace.Document(t.Context(), "acme")
	require.NoError(t, err)
	ws, err := saved.Workspace()
	require.NoError(t, err)
	want, err := json.Marshal(ws)
	require.NoError(t, err)
	got := getFlows(t, env, tok)
	require.JSONEq(t, string(want), string(got.Body))
	require.Contains(t, string(got.Body), `"clientKeyPem":{"set":true}`)
	require.Contains(t, string(got.Body), `"credentials":{"password":{"set":true},"user":{"set":true}}`)
	require.NotContains(t, string(got.Body), "-----BEGIN")
	require.Equal(t, `"1"`, got.Header.Get("ETag"))

	// Deploying what was read back changes nothing, over HTTP or as the model.
	res = deploy(t, env, tok, got.Body)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	again := getFlows(t, env, tok)
	require.JSONEq(t, string(got.Body), string(again.Body))
	secrets := nodeSecrets(t, env, "acme")
	_, err = env.Workspace.Deploy(t.Context(), "acme", ws, 2)
	require.NoError(t, err)
	require.Equal(t, secrets, nodeSecrets(t, env, "acme"))
	n, err := env.Workspace.Node(t.Context(), "acme", "a", "n1")
	require.NoError(t, err)
	require.Equal(t, string(pair.KeyPEM()), n.TLS.ClientCert.KeyPEM.Text.Reveal())
	require.JSONEq(t, string(got.Body), string(getFlows(t, env, tok).Body))
}
