package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
)

type obj = map[string]any

func flow(id string, nodes ...obj) obj {
	ns := make([]any, len(nodes))
	for i, n := range nodes {
		ns[i] = n
	}
	return obj{"id": id, "label": "Flow " + id, "nodes": ns}
}

func node(id, typ string, props obj) obj {
	n := obj{"id": id, "type": typ}
	for k, v := range props {
		n[k] = v
	}
	return n
}

func workspaceOf(flows ...obj) obj {
	fs := make([]any, len(flows))
	for i, f := range flows {
		fs[i] = f
	}
	return obj{"flows": fs}
}

func deploy(t *testing.T, env *apitest.Env, tok string, ws any) *apitest.Response {
	t.Helper()
	return env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok, Body: ws})
}

func getFlows(t *testing.T, env *apitest.Env, tok string) *apitest.Response {
	t.Helper()
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows", Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	return res
}

func post(t *testing.T, env *apitest.Env, tok string, body any) {
	t.Helper()
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
}

// nodeSecrets lists the stored node secret names of tenant as "node/name".
func nodeSecrets(t *testing.T, env *apitest.Env, tenant string) []string {
	t.Helper()
	var out []string
	err := db.InTenant(context.Background(), env.Pool, tenant, func(tx pgx.Tx) error {
		keys, err := repo.ListNodeSecretKeys(context.Background(), tx, tenant)
		for _, k := range keys {
			out = append(out, k.NodeID+"/"+k.Name)
		}
		return err
	})
	require.NoError(t, err)
	return out
}

func TestDeployRefusesBadReferencesAndSavesNothing(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlinePair("edge-client", ca.Issue(t, materialtest.Options{})))
	post(t, env, tok, inlineCA("root-ca", ca))

	res := deploy(t, env, tok, workspaceOf(
		flow("ingest-line-1",
			node("tcp-out-3", "tcp-out", obj{"tls": obj{"caBundleRef": "edge-client"}}),
			node("mqtt-1", "mqtt-broker", obj{"tls": obj{"caBundleRef": "root-ca", "clientCertRef": "missing-pair"}})),
		flow("plc", node("opc-1", "opcua-server", obj{"certRef": "root-ca"}))))
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	var body struct {
		Errors []struct {
			Location, Message, FlowID, NodeID, NodeType, Field string
		} `json:"errors"`
	}
	res.Decode(t, &body)
	require.Len(t, body.Errors, 3)
	e := body.Errors[0]
	require.Equal(t, "ingest-line-1", e.FlowID)
	require.Equal(t, "tcp-out-3", e.NodeID)
	require.Equal(t, "tcp-out", e.NodeType)
	require.Equal(t, "tls.caBundleRef", e.Field)
	require.Equal(t, "body.flows[0].nodes[0].tls.caBundleRef", e.Location)
	require.Contains(t, e.Message, `"edge-client", a client-pair; it must name a ca-bundle`)
	require.Equal(t, "mqtt-1", body.Errors[1].NodeID)
	require.Equal(t, "tls.clientCertRef", body.Errors[1].Field)
	require.Contains(t, body.Errors[1].Message, "no entry")
	require.Equal(t, "opc-1", body.Errors[2].NodeID)
	require.Equal(t, "certRef", body.Errors[2].Field)

	// Nothing of the refused deploy was saved.
	got := getFlows(t, env, tok)
	require.JSONEq(t, `{"flows":[]}`, string(got.Body))
	require.Equal(t, `"0"`, got.Header.Get("ETag"))
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/root-ca", Token: tok})
	require.EqualValues(t, 0, res.JSON(t)["referenceCount"])
}

func TestDeleteReferencedEntry(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlineCA("internal-root-ca", ca))

	ws := workspaceOf(flow("ingest-line-1",
		node("tcp-out-3", "tcp-out", obj{"name": "to PLC", "host": "10.0.0.3", "port": 9000,
			"tls": obj{"caBundleRef": "internal-root-ca", "serverName": "plc.local"}})))
	res := deploy(t, env, tok, ws)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.EqualValues(t, 1, res.JSON(t)["references"])

	res = env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/internal-root-ca", Token: tok})
	require.Equal(t, http.StatusConflict, res.Status)
	require.Equal(t, `{"error":"Conflict","message":"cert is still referenced by deployed nodes","references":[{"flowId":"ingest-line-1","nodeId":"tcp-out-3","nodeType":"tcp-out","field":"tls.caBundleRef"}]}`,
		strings.TrimSpace(string(res.Body)))

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: tok})
	require.EqualValues(t, 1, res.JSON(t)["items"].([]any)[0].(obj)["referenceCount"])
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/internal-root-ca/references", Token: tok})
	require.JSONEq(t, `{"references":[{"flowId":"ingest-line-1","nodeId":"tcp-out-3","nodeType":"tcp-out","field":"tls.caBundleRef"}],"total":1}`, string(res.Body))

	// The type cannot change while referenced: the same list comes back.
	client := ca.Issue(t, materialtest.Options{})
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/internal-root-ca", Token: tok,
		Body: obj{"type": "client-pair", "certPem": string(client.ChainPEM()), "keyPem": string(client.KeyPEM())}})
	require.Equal(t, http.StatusConflict, res.Status)
	require.Equal(t, `{"error":"Conflict","message":"cert is still referenced by deployed nodes","references":[{"flowId":"ingest-line-1","nodeId":"tcp-out-3","nodeType":"tcp-out","field":"tls.caBundleRef"}]}`,
		strings.TrimSpace(string(res.Body)))

	// Every property of the node round-trips.
	got := getFlows(t, env, tok)
	require.JSONEq(t, `{"flows":[{"id":"ingest-line-1","label":"Flow ingest-line-1","nodes":[{"id":"tcp-out-3","type":"tcp-out","name":"to PLC","host":"10.0.0.3","port":9000,"tls":{"caBundleRef":"internal-root-ca","serverName":"plc.local"}}]}]}`,
		string(got.Body))
	require.Equal(t, `"1"`, got.Header.Get("ETag"))

	// A deploy that drops the reference frees the entry.
	res = deploy(t, env, tok, workspaceOf(flow("ingest-line-1", node("tcp-out-3", "tcp-out", obj{"host": "10.0.0.3"}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/internal-root-ca", Token: tok})
	require.Equal(t, http.StatusNoContent, res.Status, "%s", res.Body)
}

func TestConflictListsTheFirstThousandReferences(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlineCA("shared-ca", ca))
	post(t, env, tok, inlinePair("shared-client", ca.Issue(t, materialtest.Options{})))

	// 1,205 references over three flows, sent in an order unlike the sorted one.
	var want []Reference
	var flows []obj
	for f := 2; f >= 0; f-- {
		var nodes []obj
		for n := 0; n < 400; n++ {
			fid, nid := fmt.Sprintf("flow-%d", f), fmt.Sprintf("f%d-node-%03d", f, n)
			tlsBlock := obj{"caBundleRef": "shared-ca"}
			want = append(want, Reference{fid, nid, "http-request", "tls.caBundleRef"})
			if n%80 == 0 {
				tlsBlock["clientCertRef"] = "shared-client"
			}
			nodes = append(nodes, node(nid, "http-request", obj{"tls": tlsBlock}))
		}
		flows = append(flows, flow(fmt.Sprintf("flow-%d", f), nodes...))
	}
	extra := make([]obj, 5)
	for i := range extra {
		nid := fmt.Sprintf("z-%d", i)
		extra[i] = node(nid, "opcua-client", obj{"tls": obj{"caBundleRef": "shared-ca"}})
		want = append(want, Reference{"flow-3", nid, "opcua-client", "tls.caBundleRef"})
	}
	flows = append(flows, flow("flow-3", extra...))
	res := deploy(t, env, tok, workspaceOf(flows...))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.EqualValues(t, 1205+15, res.JSON(t)["references"])
	sort.Slice(want, func(i, j int) bool {
		a, b := want[i], want[j]
		if a.FlowID != b.FlowID {
			return a.FlowID < b.FlowID
		}
		return a.NodeID < b.NodeID
	})

	res = env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/shared-ca", Token: tok})
	require.Equal(t, http.StatusConflict, res.Status)
	var conflict struct {
		Error           string      `json:"error"`
		References      []Reference `json:"references"`
		TotalReferences int         `json:"totalReferences"`
	}
	res.Decode(t, &conflict)
	require.Equal(t, "Conflict", conflict.Error)
	require.Equal(t, 1205, conflict.TotalReferences)
	require.Equal(t, want[:1000], conflict.References)

	var paged []Reference
	cursor := ""
	for range 10 {
		path := "/api/v1/certs/shared-ca/references?limit=500"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: path, Token: tok})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		var page struct {
			References []Reference `json:"references"`
			Total      int         `json:"total"`
			NextCursor string      `json:"nextCursor"`
		}
		res.Decode(t, &page)
		require.Equal(t, 1205, page.Total)
		paged = append(paged, page.References...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	require.Equal(t, want, paged)

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs?limit=10", Token: tok})
	counts := map[string]float64{}
	for _, it := range res.JSON(t)["items"].([]any) {
		counts[it.(obj)["id"].(string)] = it.(obj)["referenceCount"].(float64)
	}
	require.Equal(t, map[string]float64{"shared-ca": 1205, "shared-client": 15}, counts)

	// Redeploying the same workspace keeps the same rows.
	res = deploy(t, env, tok, workspaceOf(flows...))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.EqualValues(t, 2, res.JSON(t)["version"])
}

func TestDeployRules(t *testing.T) {
	t.Parallel()
	rootsDir := t.TempDir()
	env := apitest.New(t, apitest.Options{FileRoots: rootsDir + "/{tenant}"})
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	client := ca.Issue(t, materialtest.Options{})
	other := ca.Issue(t, materialtest.Options{})
	post(t, env, tok, inlineCA("root-ca", ca))
	inside := apitest.WriteFile(t, rootsDir+"/acme", "ca.pem", ca.CertPEM())
	outside := apitest.WriteFile(t, t.TempDir(), "ca.pem", ca.CertPEM())

	one := func(n obj) obj { return workspaceOf(flow("f1", n)) }
	cases := []struct {
		name   string
		ws     obj
		status int
		field  string // of the first error
		msg    string
	}{
		{"empty flow id", workspaceOf(obj{"id": "", "nodes": []any{}}), 422, "id", "is required"},
		{"duplicate flow id", workspaceOf(flow("f1"), flow("f1")), 422, "id", "flow IDs must be unique"},
		{"empty node id", one(node("", "tcp-out", nil)), 422, "id", "is required"},
		{"missing node type", one(obj{"id": "n1"}), 422, "type", "is required"},
		{"duplicate node id across flows", workspaceOf(flow("f1", node("n1", "a", nil)), flow("f2", node("n1", "b", nil))), 422, "id", "unique across the workspace"},
		{"ref and file for one part", one(node("n1", "tcp-out", obj{"tls": obj{"caBundleRef": "root-ca", "caBundleFile": inside}})), 422, "tls.caBundleRef", "more than one way"},
		{"file and inline for one part", one(node("n1", "tcp-out", obj{"tls": obj{"clientCertFile": "/a.crt", "clientKeyFile": "/a.key",
			"clientCertPem": string(client.CertPEM()), "clientKeyPem": string(client.KeyPEM())}})), 422, "tls.clientCertFile", "more than one way"},
		{"relative path", one(node("n1", "tcp-out", obj{"tls": obj{"caBundleFile": "certs/ca.pem"}})), 422, "tls.caBundleFile", "absolute"},
		{"cert file without key file", one(node("n1", "tcp-out", obj{"tls": obj{"clientCertFile": inside}})), 422, "tls.clientKeyFile", "is required"},
		{"path outside the roots", one(node("n1", "tcp-out", obj{"tls": obj{"caBundleFile": outside}})), 422, "tls.caBundleFile", "outside the allowed file roots"},
		{"inline PEM that does not parse", one(node("n1", "tcp-out", obj{"tls": obj{"caBundlePem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}})), 422, "tls.caBundlePem", ""},
		{"inline pair that does not match", one(node("n1", "tcp-out", obj{"tls": obj{"clientCertPem": string(client.CertPEM()), "clientKeyPem": string(other.KeyPEM())}})), 422, "tls.clientKeyPem", "does not match"},
		{"inline cert without key", one(node("n1", "tcp-out", obj{"tls": obj{"clientCertPem": string(client.CertPEM())}})), 422, "tls.clientKeyPem", "is required"},
		{"keep marker with nothing stored", one(node("n1", "tcp-out", obj{"tls": obj{"caBundlePem": obj{"set": true}}})), 422, "tls.caBundlePem", "nothing is stored"},
		{"credential keep marker with nothing stored", one(node("n1", "tcp-out", obj{"credentials": obj{"password": obj{"set": true}}})), 422, "credentials.password", "nothing is stored"},
		{"certRef and legacy files", one(node("n1", "opcua-server", obj{"certRef": "x", "clientCertFile": inside, "clientKeyFile": inside})), 422, "certRef", ""},
		{"tls not an object", one(node("n1", "tcp-out", obj{"tls": "tls-config-1"})), 422, "", "must be an object"},
		{"credential not a string", one(node("n1", "tcp-out", obj{"credentials": obj{"password": 42}})), 422, "", `must be a string or {"set": true}`},
		{"file inside the roots", one(node("n1", "tcp-out", obj{"tls": obj{"caBundleFile": inside}})), 200, "", ""},
		{"missing file is a warning", one(node("n1", "tcp-out", obj{"tls": obj{"caBundleFile": rootsDir + "/acme/later.pem"}})), 200, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := deploy(t, env, tok, c.ws)
			require.Equal(t, c.status, res.Status, "%s", res.Body)
			if c.status != 422 {
				return
			}
			var body struct {
				Errors []struct{ Location, Message, Field string } `json:"errors"`
			}
			res.Decode(t, &body)
			require.NotEmpty(t, body.Errors)
			if c.field != "" {
				require.Equal(t, c.field, body.Errors[0].Field, "%s", res.Body)
			}
			require.Contains(t, body.Errors[0].Message, c.msg)
			require.NotContains(t, string(res.Body), "BEGIN")
		})
	}

	res := deploy(t, env, tok, `{"flows": [`)
	require.Equal(t, http.StatusBadRequest, res.Status, "%s", res.Body)
	res = deploy(t, env, tok, `{"flows": {}}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	res = deploy(t, env, tok, `{"flows": [{"id": 7}]}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), "body.flows[0].id")
	res = deploy(t, env, tok, `{}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)

	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: env.Token(t, "acme", "viewer"), Body: workspaceOf()})
	require.Equal(t, http.StatusForbidden, res.Status)
	requireNoSecrets(t, env, nil, client, other)
}

func TestDeployWarnings(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, tempRoots())
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	c := ca.Issue(t, materialtest.Options{})
	dir := t.TempDir()
	certPath := apitest.WriteFile(t, dir, "c.crt", c.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "c.key", c.KeyPEM())

	ws := workspaceOf(flow("plant",
		node("opc-7f3a.9b21", "opcua-server", obj{"endpoint": "opc.tcp://plc:4840", "clientCertFile": certPath, "clientKeyFile": keyPath}),
		node("tcp-1", "tcp-out", obj{"tls": obj{"caBundleFile": dir + "/not-yet.pem"}})))
	res := deploy(t, env, tok, ws)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	var body struct {
		Warnings []struct{ NodeID, Field, Message string } `json:"warnings"`
	}
	res.Decode(t, &body)
	require.Len(t, body.Warnings, 2, "%s", res.Body)
	require.Equal(t, "opc-7f3a.9b21", body.Warnings[0].NodeID)
	require.Contains(t, body.Warnings[0].Message, "deprecated")
	require.Equal(t, "tls.caBundleFile", body.Warnings[1].Field)

	logs := env.Logs.String()
	require.Equal(t, 1, strings.Count(logs, "deprecated clientCertFile"), "%s", logs)
	require.Contains(t, logs, `"node":"opc-7f3a.9b21"`)
}

func TestNodeCredentials(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	const password, user, token = "s3cret-Pa55word", "plc-operator", "tok-9f8e7d6c5b4a"

	res := deploy(t, env, tok, workspaceOf(flow("f1",
		node("mqtt-1", "mqtt-broker", obj{"credentials": obj{"user": user, "password": password}}),
		node("http-1", "http-request", obj{"credentials": obj{"token": token}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got := getFlows(t, env, tok)
	require.JSONEq(t, `{"flows":[{"id":"f1","label":"Flow f1","nodes":[
		{"id":"mqtt-1","type":"mqtt-broker","credentials":{"password":{"set":true},"user":{"set":true}}},
		{"id":"http-1","type":"http-request","credentials":{"token":{"set":true}}}]}]}`, string(got.Body))
	require.Equal(t, []string{"http-1/credentials.token", "mqtt-1/credentials.password", "mqtt-1/credentials.user"}, nodeSecrets(t, env, "acme"))

	// What GET returned deploys back unchanged.
	res = deploy(t, env, tok, got.Body)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Len(t, nodeSecrets(t, env, "acme"), 3)

	// Omitted credentials keep the stored values.
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("mqtt-1", "mqtt-broker", nil), node("http-1", "http-request", nil))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, []string{"http-1/credentials.token", "mqtt-1/credentials.password", "mqtt-1/credentials.user"}, nodeSecrets(t, env, "acme"))

	// An empty string clears one key; the others stay.
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("mqtt-1", "mqtt-broker", obj{"credentials": obj{"password": ""}}), node("http-1", "http-request", nil))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, []string{"http-1/credentials.token", "mqtt-1/credentials.user"}, nodeSecrets(t, env, "acme"))

	// The stored value is the one sent, sealed to its node.
	saved, err := env.Workspace.Document(context.Background(), "acme")
	require.NoError(t, err)
	ws, err := saved.Workspace()
	require.NoError(t, err)
	_, mqtt := ws.Find("f1", "mqtt-1")
	require.True(t, mqtt.Credentials["user"].Keep)

	// A removed node's credentials are removed.
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("mqtt-1", "mqtt-broker", nil))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, []string{"mqtt-1/credentials.user"}, nodeSecrets(t, env, "acme"))

	// Another tenant sees none of it.
	other := getFlows(t, env, env.Token(t, "other", "viewer"))
	require.JSONEq(t, `{"flows":[]}`, string(other.Body))
	require.Empty(t, nodeSecrets(t, env, "other"))

	for _, where := range []string{env.Logs.String(), string(got.Body), string(testdbDump(t, env.DBURL))} {
		for _, s := range []string{password, user, token} {
			require.NotContains(t, where, s)
		}
	}
}

func TestInlineTLSPEMIsSealedAndNeverReturned(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	client := ca.Issue(t, materialtest.Options{CommonName: "inline-client"})

	res := deploy(t, env, tok, workspaceOf(flow("f1", node("n1", "tcp-out", obj{"tls": obj{
		"caBundlePem": string(ca.CertPEM()), "clientCertPem": string(client.ChainPEM()), "clientKeyPem": string(client.KeyPEM())}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got := getFlows(t, env, tok)
	require.JSONEq(t, `{"flows":[{"id":"f1","label":"Flow f1","nodes":[{"id":"n1","type":"tcp-out",
		"tls":{"caBundlePem":{"set":true},"clientCertPem":{"set":true},"clientKeyPem":{"set":true}}}]}]}`, string(got.Body))

	rep := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows/f1/nodes/n1/tls", Token: tok})
	require.Equal(t, http.StatusOK, rep.Status, "%s", rep.Body)
	var report struct {
		NodeType string `json:"nodeType"`
		Parts    []struct {
			Part, Origin, FingerprintSha256, Subject, Error string
		} `json:"parts"`
	}
	rep.Decode(t, &report)
	require.Equal(t, "tcp-out", report.NodeType)
	require.Len(t, report.Parts, 2)
	require.Equal(t, "caBundle", report.Parts[0].Part)
	require.Equal(t, "inline", report.Parts[1].Origin)
	require.Equal(t, fingerprint(client), report.Parts[1].FingerprintSha256)
	require.Equal(t, "CN=inline-client,O=LOOPZE Test", report.Parts[1].Subject)

	// Deploying the markers back keeps the material; a new certificate with a kept key
	// is checked against the stored key.
	res = deploy(t, env, tok, got.Body)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	other := ca.Issue(t, materialtest.Options{})
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("n1", "tcp-out", obj{"tls": obj{
		"caBundlePem": obj{"set": true}, "clientCertPem": string(other.CertPEM()), "clientKeyPem": obj{"set": true}}}))))
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), "does not match")

	// Switching the client part to a reference drops the stored inline PEM.
	post(t, env, tok, inlinePair("edge", client))
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("n1", "tcp-out", obj{"tls": obj{
		"caBundlePem": obj{"set": true}, "clientCertRef": "edge"}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, []string{"n1/tls.caBundlePem"}, nodeSecrets(t, env, "acme"))

	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows/f1/nodes/nope/tls", Token: tok})
	require.Equal(t, http.StatusNotFound, res.Status)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows/f1/nodes/n1/tls", Token: env.Token(t, "other", "viewer")})
	require.Equal(t, http.StatusNotFound, res.Status)
	requireNoSecrets(t, env, append(got.Body, rep.Body...), client, other)
	require.NotContains(t, string(testdbDump(t, env.DBURL)), "-----BEGIN")
}

func TestDeployIfMatch(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	put := func(etag string) *apitest.Response {
		return env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok,
			Body: workspaceOf(flow("f1")), Headers: map[string]string{"If-Match": etag}})
	}
	require.Equal(t, http.StatusPreconditionFailed, put(`"3"`).Status)
	res := deploy(t, env, tok, workspaceOf())
	require.Equal(t, `"1"`, res.Header.Get("ETag"))
	require.Equal(t, http.StatusPreconditionFailed, put(`"2"`).Status)
	res = put(`"1"`)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, `"2"`, res.Header.Get("ETag"))
}

// TestDeployDeleteRace races deploys that reference an entry against deletes and
// re-creations of it. Whatever the interleaving, no answer is a 500 and no reference is
// left pointing at a missing entry.
func TestDeployDeleteRace(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	entry := inlineCA("racy-ca", ca)
	withRef := workspaceOf(flow("f1", node("n1", "tcp-out", obj{"tls": obj{"caBundleRef": "racy-ca"}})))
	withoutRef := workspaceOf(flow("f1", node("n1", "tcp-out", nil)))

	var (
		mu       sync.Mutex
		statuses = map[string]map[int]int{"deploy": {}, "delete": {}, "create": {}}
	)
	record := func(op string, status int) {
		mu.Lock()
		defer mu.Unlock()
		statuses[op][status]++
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				switch (w + i) % 4 {
				case 0:
					record("deploy", deploy(t, env, tok, withRef).Status)
				case 1:
					record("delete", env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/racy-ca", Token: tok}).Status)
				case 2:
					record("create", env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: entry}).Status)
				default:
					record("deploy", deploy(t, env, tok, withoutRef).Status)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("statuses: %v", statuses)
	for op, m := range statuses {
		for status := range m {
			require.NotEqual(t, http.StatusInternalServerError, status, "%s: %v", op, m)
		}
	}
	for status := range statuses["deploy"] {
		require.Contains(t, []int{200, 409, 422}, status)
	}
	for status := range statuses["delete"] {
		require.Contains(t, []int{204, 404, 409}, status)
	}

	var dangling int
	err := db.InTenant(context.Background(), env.Pool, "acme", func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `
			SELECT count(*) FROM entry_references r
			WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.tenant_id = r.tenant_id AND e.id = r.entry_id)`).Scan(&dangling)
	})
	require.NoError(t, err)
	require.Zero(t, dangling)

	// The saved workspace and the reference rows agree.
	got := getFlows(t, env, tok)
	refsRes := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/racy-ca/references", Token: tok})
	if strings.Contains(string(got.Body), "caBundleRef") {
		require.Equal(t, http.StatusOK, refsRes.Status)
		require.EqualValues(t, 1, refsRes.JSON(t)["total"])
	} else if refsRes.Status == http.StatusOK {
		require.EqualValues(t, 0, refsRes.JSON(t)["total"])
	}
}

func TestFlowsNeedAToken(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	for _, r := range []apitest.Request{
		{Method: http.MethodGet, Path: "/api/v1/flows"},
		{Method: http.MethodPut, Path: "/api/v1/flows", Body: workspaceOf()},
		{Method: http.MethodGet, Path: "/api/v1/flows/f/nodes/n/tls"},
	} {
		require.Equal(t, http.StatusUnauthorized, env.Do(t, r).Status, r.Path)
	}
	var js json.RawMessage = getFlows(t, env, env.Token(t, "acme", "viewer")).Body
	require.JSONEq(t, `{"flows":[]}`, string(js))
}

// Reference is a reference as the API shows it.
type Reference struct {
	FlowID   string `json:"flowId"`
	NodeID   string `json:"nodeId"`
	NodeType string `json:"nodeType"`
	Field    string `json:"field"`
}
