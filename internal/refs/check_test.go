package refs_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/secret"
)

// stored is a fake of the values a previous deploy left.
type stored map[string]string

func (s stored) Has(nodeID, name string) bool { _, ok := s[nodeID+"/"+name]; return ok }
func (s stored) Open(nodeID, name string) (secret.String, error) {
	return secret.String(s[nodeID+"/"+name]), nil
}

func TestCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := materialtest.NewCA(t, materialtest.Options{})
	pair := ca.Issue(t, materialtest.Options{})
	other := ca.Issue(t, materialtest.Options{})
	expired := ca.Issue(t, materialtest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	caFile := materialtest.WriteFile(t, dir, "ca.pem", ca.CertPEM())
	expiredCrt := materialtest.WriteFile(t, dir, "old.crt", expired.CertPEM())
	expiredKey := materialtest.WriteFile(t, dir, "old.key", expired.KeyPEM())
	prev := stored{"n/tls.clientKeyPem": string(pair.KeyPEM()), "n/credentials.password": "x"}

	cases := []struct {
		name     string
		doc      string
		roots    material.Roots
		errs     []issue
		warnings []issue
	}{
		{name: "empty workspace", doc: `{"flows":[]}`},
		{name: "flow ids", doc: `{"flows":[{"id":""},{"id":"a"},{"id":"a"}]}`,
			errs: []issue{{"", "id", "is required"}, {"", "id", "must be unique"}}},
		{name: "node ids and types", doc: `{"flows":[{"id":"f","nodes":[{"id":"","type":"t"},{"id":"n"},{"id":"n","type":"t"}]}]}`,
			errs: []issue{{"", "id", "is required"}, {"n", "type", "is required"}, {"n", "id", "unique across the workspace"}}},
		{name: "one way per part", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"serverCertRef":"s","serverKeyFile":"/k"}}]}]}`,
			errs: []issue{{"n", "tls.serverCertRef", "serverCertRef, serverKeyFile"}}},
		{name: "parts are independent", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"caBundleRef":"c","clientCertRef":"p","serverCertRef":"s"}}]}]}`},
		{name: "relative path", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"clientCertFile":"a.crt","clientKeyFile":"/a.key"}}]}]}`,
			errs: []issue{{"n", "tls.clientCertFile", "absolute"}}},
		{name: "key file alone", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"clientKeyFile":"/a.key"}}]}]}`,
			errs: []issue{{"n", "tls.clientCertFile", "is required"}}},
		{name: "file outside roots", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"caBundleFile":"` + caFile + `"}}]}]}`,
			roots: material.Roots{"/nonexistent-root"}, errs: []issue{{"n", "tls.caBundleFile", "outside the allowed file roots"}}},
		{name: "file inside roots", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"caBundleFile":"` + caFile + `"}}]}]}`,
			roots: material.Roots{dir}},
		{name: "missing file warns", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"caBundleFile":"` + dir + `/none.pem"}}]}]}`,
			warnings: []issue{{"n", "tls.caBundleFile", "no such file"}}},
		{name: "expired file warns", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"clientCertFile":"` + expiredCrt + `","clientKeyFile":"` + expiredKey + `"}}]}]}`,
			warnings: []issue{{"n", "tls.clientCertFile", "expired"}}},
		{name: "new cert with kept key that matches", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"clientCertPem":` + jsonString(pair.CertPEM()) + `,"clientKeyPem":{"set":true}}}]}]}`},
		{name: "new cert with kept key that does not match", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"clientCertPem":` + jsonString(other.CertPEM()) + `,"clientKeyPem":{"set":true}}}]}]}`,
			errs: []issue{{"n", "tls.clientKeyPem", "does not match"}}},
		{name: "kept value of another node", doc: `{"flows":[{"id":"f","nodes":[{"id":"m","type":"t","tls":{"clientCertPem":{"set":true},"clientKeyPem":{"set":true}}}]}]}`,
			errs: []issue{{"m", "tls.clientCertPem", "nothing is stored"}}},
		{name: "ca bundle key field does not exist", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"caBundlePem":` + jsonString(pair.KeyPEM()) + `}}]}]}`,
			errs: []issue{{"n", "tls.caBundlePem", ""}}},
		{name: "credentials", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","credentials":{"password":{"set":true},"user":{"set":true},"":"x"}}]}]}`,
			errs: []issue{{"n", "credentials", "keys must be"}, {"n", "credentials.user", "nothing is stored"}}},
		{name: "opcua certRef", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"opcua-server","certRef":"p"}]}]}`},
		{name: "opcua certRef not a string", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"opcua-server","certRef":7}]}]}`,
			errs: []issue{{"n", "certRef", "must be a string"}}},
		{name: "opcua certRef and tls client part", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"opcua-server","certRef":"p","tls":{"clientCertRef":"q"}}]}]}`,
			errs: []issue{{"n", "certRef", "cannot also set"}}},
		{name: "opcua legacy files warn", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"opcua-server","clientCertFile":"` + expiredCrt + `","clientKeyFile":"` + expiredKey + `"}]}]}`,
			warnings: []issue{{"n", "clientCertFile", "deprecated"}, {"n", "clientCertFile", "expired"}}},
		{name: "opcua legacy file half", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"opcua-server","clientCertFile":"` + expiredCrt + `"}]}]}`,
			errs: []issue{{"n", "clientKeyFile", "is required"}}, warnings: []issue{{"n", "clientCertFile", "deprecated"}}},
		{name: "other node types keep certRef as a plain property", doc: `{"flows":[{"id":"f","nodes":[{"id":"n","type":"tcp-out","certRef":7,"clientCertFile":"x"}]}]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ws, err := refs.Parse([]byte(c.doc))
			require.NoError(t, err)
			errs, warnings := refs.Checker{Tenant: material.DefaultTenant, Roots: c.roots, Now: time.Now(), Stored: prev}.Check(context.Background(), ws)
			requireIssues(t, errs, c.errs)
			requireIssues(t, warnings, c.warnings)
		})
	}
}

// issue is an expected issue: node, field and part of the message.
type issue struct{ node, field, msg string }

func requireIssues(t *testing.T, got []refs.Issue, want []issue) {
	t.Helper()
	require.Len(t, got, len(want), "%v", got)
	for i, w := range want {
		require.Equal(t, w.node, got[i].NodeID, "%v", got[i])
		require.Equal(t, w.field, got[i].Field, "%v", got[i])
		require.Contains(t, got[i].Message, w.msg)
		require.NotContains(t, got[i].Message, "BEGIN")
	}
}

func TestCheckTypes(t *testing.T) {
	t.Parallel()
	ws, err := refs.Parse([]byte(`{"flows":[{"id":"f","nodes":[
		{"id":"a","type":"tcp-out","tls":{"caBundleRef":"ca","clientCertRef":"ca","serverCertRef":"server"}},
		{"id":"b","type":"opcua-server","certRef":"server"},
		{"id":"c","type":"opcua-server","certRef":"gone"}]}]}`))
	require.NoError(t, err)
	issues := refs.CheckTypes(refs.Extract(ws), map[string]material.Kind{"ca": material.CABundle, "server": material.ServerPair})
	got := []string{}
	for _, is := range issues {
		got = append(got, is.String())
	}
	require.Equal(t, []string{
		`flow "f", node "a" (tcp-out), tls.clientCertRef: names "ca", a ca-bundle; it must name a client-pair`,
		`flow "f", node "b" (opcua-server), certRef: names "server", a server-pair; it must name a client-pair`,
		`flow "f", node "c" (opcua-server), certRef: names "gone", which is no entry of this tenant's certificate store`,
	}, got)
	require.Equal(t, "flows[0].nodes[2].certRef", issues[2].Path())
}

func jsonString(b []byte) string {
	out, _ := json.Marshal(string(b))
	return string(out)
}
