package refs_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/refs"
)

const sample = `{"flows":[
  {"id":"ingest-line-1","label":"Line 1","disabled":false,"info":"docs","nodes":[
    {"id":"tcp-out-3","type":"tcp-out","name":"to PLC","x":120,"y":40,"wires":[["a"],[]],"z":"ingest-line-1",
     "tls":{"caBundleRef":"internal-root-ca","serverName":"plc.local","alpnProtocol":"h2",
            "clientCertPem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","clientKeyPem":{"set":true}},
     "credentials":{"password":"hunter2","user":{"set":true},"token":"","other":null}},
    {"id":"opc-1","type":"opcua-server","certRef":"opcua-opc-1","endpoint":"opc.tcp://plc:4840"}]},
  {"id":"empty","nodes":[]}]}`

func TestParseKeepsEveryProperty(t *testing.T) {
	t.Parallel()
	ws, err := refs.Parse([]byte(sample))
	require.NoError(t, err)
	require.Len(t, ws.Flows, 2)
	n := ws.Flows[0].Nodes[0]
	require.Equal(t, "tcp-out-3", n.ID)
	require.Equal(t, "tcp-out", n.Type)
	require.Equal(t, "to PLC", n.Name)
	require.Equal(t, "internal-root-ca", n.TLS.CABundle.Ref)
	require.Equal(t, "plc.local", n.TLS.ServerName)
	require.False(t, n.TLS.ClientCert.CertPEM.Keep)
	require.Contains(t, n.TLS.ClientCert.CertPEM.Text.Reveal(), "BEGIN CERTIFICATE")
	require.True(t, n.TLS.ClientCert.KeyPEM.Keep)
	require.Equal(t, "hunter2", n.Credentials["password"].Text.Reveal())
	require.True(t, n.Credentials["user"].Keep)
	require.True(t, n.Credentials["token"].Cleared())
	require.True(t, n.Credentials["other"].Cleared())

	out, err := json.Marshal(ws)
	require.NoError(t, err)
	require.JSONEq(t, `{"flows":[
	  {"id":"ingest-line-1","label":"Line 1","disabled":false,"info":"docs","nodes":[
	    {"id":"tcp-out-3","type":"tcp-out","name":"to PLC","x":120,"y":40,"wires":[["a"],[]],"z":"ingest-line-1",
	     "tls":{"caBundleRef":"internal-root-ca","serverName":"plc.local","alpnProtocol":"h2",
	            "clientCertPem":{"set":true},"clientKeyPem":{"set":true}},
	     "credentials":{"password":{"set":true},"user":{"set":true},"token":{"set":true},"other":{"set":true}}},
	    {"id":"opc-1","type":"opcua-server","certRef":"opcua-opc-1","endpoint":"opc.tcp://plc:4840"}]},
	  {"id":"empty","nodes":[]}]}`, string(out))
	require.NotContains(t, string(out), "hunter2")

	stripped, err := json.Marshal(ws.Stripped())
	require.NoError(t, err)
	require.NotContains(t, string(stripped), "credentials")
	require.NotContains(t, string(stripped), "Pem")
	require.Contains(t, string(stripped), `"alpnProtocol":"h2"`)
	// Stripping copies: the original still holds its values.
	require.Equal(t, "hunter2", ws.Flows[0].Nodes[0].Credentials["password"].Text.Reveal())
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	const pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n-----END PRIVATE KEY-----"
	cases := []struct{ doc, path, msg string }{
		{`{"flows":[`, "body", "malformed JSON"},
		{`[]`, "body", "must be an object"},
		{`{}`, "flows", "is required"},
		{`{"flows":[1]}`, "flows[0]", "must be an object"},
		{`{"flows":[{"id":1}]}`, "flows[0].id", "must be a string"},
		{`{"flows":[{"id":"f","nodes":{}}]}`, "flows[0].nodes", "must be an array"},
		{`{"flows":[{"id":"f","nodes":[{"id":"n","type":3}]}]}`, "flows[0].nodes[0].type", "must be a string"},
		{`{"flows":[{"id":"f","nodes":[{"id":"n","tls":[]}]}]}`, "flows[0].nodes[0].tls", "must be an object"},
		{`{"flows":[{"id":"f","nodes":[{"id":"n","tls":{"caBundleRef":{}}}]}]}`, "flows[0].nodes[0].tls.caBundleRef", "must be a string"},
		{`{"flows":[{"id":"f","nodes":[{"id":"n","tls":{"clientKeyPem":{"set":false}}}]}]}`, "flows[0].nodes[0].tls.clientKeyPem", `{"set": true}`},
		{`{"flows":[{"id":"f","nodes":[{"id":"n","credentials":{"k":["` + strings.ReplaceAll(pem, "\n", `\n`) + `"]}}]}]}`, "flows[0].nodes[0].credentials.k", `{"set": true}`},
		{`{"flows":[{"id":"f","nodes":[{"id":"n","credentials":"x"}]}]}`, "flows[0].nodes[0].credentials", "must be an object"},
		{`{"flows":[]} {}`, "body", "unexpected data"},
	}
	for _, c := range cases {
		_, err := refs.Parse([]byte(c.doc))
		var fe *refs.FieldError
		require.ErrorAs(t, err, &fe, c.doc)
		if c.path == "body" && c.msg == "must be an object" {
			require.Equal(t, "body", fe.Path)
			continue
		}
		require.Equal(t, c.path, fe.Path, c.doc)
		require.Contains(t, fe.Message, c.msg, c.doc)
		require.NotContains(t, err.Error(), "BEGIN")
		require.NotContains(t, err.Error(), "MC4CAQAw")
	}
}

func TestEffectiveTLS(t *testing.T) {
	t.Parallel()
	ws, err := refs.Parse([]byte(`{"flows":[{"id":"f","nodes":[
		{"id":"a","type":"opcua-server","certRef":"pair","tls":{"caBundleRef":"ca"}},
		{"id":"b","type":"opcua-server","clientCertFile":"/c.crt","clientKeyFile":"/c.key"},
		{"id":"c","type":"opcua-server"},
		{"id":"d","type":"tcp-out","certRef":"ignored","tls":{"clientCertRef":"x"}}]}]}`))
	require.NoError(t, err)
	nodes := ws.Flows[0].Nodes
	a := nodes[0].EffectiveTLS()
	require.Equal(t, "pair", a.ClientCert.Ref)
	require.Equal(t, "ca", a.CABundle.Ref)
	require.Empty(t, nodes[0].TLS.ClientCert.Ref, "the node's own block is not changed")
	b := nodes[1].EffectiveTLS()
	require.Equal(t, refs.PartSpec{CertFile: "/c.crt", KeyFile: "/c.key"}, b.ClientCert)
	require.Nil(t, nodes[2].EffectiveTLS())
	require.Equal(t, "x", nodes[3].EffectiveTLS().ClientCert.Ref)

	list := refs.Extract(ws)
	fields := []string{}
	for _, r := range list {
		fields = append(fields, r.NodeID+":"+r.Field+"="+r.EntryID+"/"+string(r.Kind))
	}
	require.Equal(t, []string{"a:tls.caBundleRef=ca/ca-bundle", "a:certRef=pair/client-pair", "d:tls.clientCertRef=x/client-pair"}, fields)
}

// FuzzParse: whatever the input, Parse either fails with a *FieldError that quotes none of
// it, or yields a workspace whose JSON parses back to the same JSON.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(`{"flows":[]}`))
	f.Add([]byte(`{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","tls":{"caBundlePem":"x"},"credentials":{"a":""}}]}]}`))
	f.Add([]byte(`{"flows":[{"nodes":null,"id":null}]}`))
	// The bounds: numbers, PEM armour, tls properties, duplicates, nesting.
	f.Add([]byte(`{"flows":[{"id":"f","nodes":[{"id":"n","x":[1e131071,1e-300,0.5,-0]}]}]}`))
	f.Add([]byte(`{"flows":[{"id":"f","label":"-----BEGIN X-----","nodes":[{"id":"n","tls":{"clientKeyPEM":"x","clientKeyPem":"-----BEGIN"}}]}]}`))
	f.Add([]byte(`{"flows":[{"id":"f","id":"g","nodes":[{"id":"n","credentials":{"k":"-----BEGIN"},"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, err := refs.Parse(data)
		if err != nil {
			var fe *refs.FieldError
			require.ErrorAs(t, err, &fe)
			return
		}
		once, err := json.Marshal(ws)
		require.NoError(t, err)
		again, err := refs.Parse(once)
		require.NoError(t, err, "%s", once)
		twice, err := json.Marshal(again)
		require.NoError(t, err)
		require.JSONEq(t, string(once), string(twice))
	})
}

// TestParseReadsAsEncodingJSON: the workspace object reads as encoding/json reads it into a
// struct (the flows field matched without regard to case, null as absent), strings with
// escapes decode, and the kept properties do not alias the caller's buffer.
func TestParseReadsAsEncodingJSON(t *testing.T) {
	t.Parallel()
	ws, err := refs.Parse([]byte(`{"Flows":[{"id":"f\u0031","label":"a\"b","nodes":[{"id":"n","type":"t","x":[ 1, 2 ]}]}],"other":1}`))
	require.NoError(t, err)
	require.Equal(t, "f1", ws.Flows[0].ID)
	require.Equal(t, `a"b`, ws.Flows[0].Label)

	doc := []byte(`{"flows":[{"id":"f","nodes":[{"id":"n","type":"t","x":"abc"}]}]}`)
	ws, err = refs.Parse(doc)
	require.NoError(t, err)
	for i := range doc {
		doc[i] = ' '
	}
	require.JSONEq(t, `"abc"`, string(ws.Flows[0].Nodes[0].Extra["x"]))

	for _, c := range []struct{ doc, path, msg string }{
		{`null`, "flows", "is required"},
		{`{"flows":null}`, "flows", "is required"},
		{`{"flows":"x"}`, "body.flows", "must be an array"},
		{`"x"`, "body", "must be an object"},
		{`{"flows":[{"id":"f","nodes":null,"label":2}]}`, "flows[0].label", "must be a string"},
	} {
		_, err := refs.Parse([]byte(c.doc))
		var fe *refs.FieldError
		require.ErrorAs(t, err, &fe, c.doc)
		require.Equal(t, c.path, fe.Path, c.doc)
		require.Contains(t, fe.Message, c.msg, c.doc)
	}
}
