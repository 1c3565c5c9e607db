package workspace_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// bigWorkspace is 2,000 nodes in 20 flows, each node referencing one of 10 CA entries.
func bigWorkspace(credentials bool) []byte {
	var flows []string
	for f := range 20 {
		var nodes []string
		for n := range 100 {
			cred := ""
			if credentials {
				cred = fmt.Sprintf(`,"credentials":{"password":"pw-%d-%d"}`, f, n)
			}
			nodes = append(nodes, fmt.Sprintf(`{"id":"n-%d-%d","type":"tcp-out","host":"10.0.%d.%d","port":9000,"x":%d,"y":%d,"wires":[[]],
				"tls":{"caBundleRef":"ca-%d","serverName":"plc-%d.local"}%s}`, f, n, f, n, n*10, f*10, (f*100+n)%10, n, cred))
		}
		flows = append(flows, fmt.Sprintf(`{"id":"flow-%d","label":"Line %d","nodes":[%s]}`, f, f, join(nodes)))
	}
	return []byte(`{"flows":[` + join(flows) + `]}`)
}

func join(ss []string) string { return strings.Join(ss, ",") }

func BenchmarkDeploy(b *testing.B) {
	env := apitest.New(b)
	tok := env.Token(b, "acme", "editor")
	ca := materialtest.NewCA(b, materialtest.Options{})
	for i := range 10 {
		res := env.Do(b, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: map[string]any{
			"id": fmt.Sprintf("ca-%d", i), "name": "CA", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM())}})
		require.Equal(b, http.StatusCreated, res.Status, "%s", res.Body)
	}
	for _, c := range []struct {
		name  string
		creds bool
	}{{"2000-nodes-2000-refs", false}, {"2000-nodes-2000-refs-2000-credentials", true}} {
		doc := bigWorkspace(c.creds)
		b.Run(c.name+"/service", func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				ws, err := refs.Parse(doc)
				if err != nil {
					b.Fatal(err)
				}
				res, err := env.Workspace.Deploy(context.Background(), "acme", ws, 0)
				if err != nil {
					b.Fatal(err)
				}
				if res.References != 2000 {
					b.Fatalf("%d references", res.References)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
		})
		b.Run(c.name+"/http", func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				res := env.Do(b, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok, Body: doc})
				if res.Status != http.StatusOK {
					b.Fatalf("%d %s", res.Status, res.Body)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
		})
	}
}

// alternatingWorkspace is the shape of the `make bench` deploy row: one flow of n tcp-out
// nodes, each with a tls.caBundleRef to the same entry; prefix makes the node IDs differ,
// so deploying two of them in turn replaces every node and every reference.
func alternatingWorkspace(prefix, ca string, n int) []byte {
	nodes := make([]map[string]any, n)
	for i := range nodes {
		nodes[i] = map[string]any{
			"id": fmt.Sprintf("%s-%05d", prefix, i), "type": "tcp-out", "name": fmt.Sprintf("line %d", i),
			"host": "plc.example.internal", "port": 9000 + i%100,
			"tls": map[string]any{"caBundleRef": ca, "serverName": "plc.example.internal"},
		}
	}
	doc, _ := json.Marshal(map[string]any{"flows": []any{map[string]any{"id": "ingest", "label": "Ingest", "nodes": nodes}}})
	return doc
}

// BenchmarkDeployAlternating deploys two workspaces of 2,000 nodes in turn, each replacing
// every node and every reference of the other, as the `make bench` row does.
func BenchmarkDeployAlternating(b *testing.B) {
	env := apitest.New(b)
	tok := env.Token(b, "acme", "editor")
	ca := materialtest.NewCA(b, materialtest.Options{})
	res := env.Do(b, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: map[string]any{
		"id": "internal-root-ca", "name": "CA", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM())}})
	require.Equal(b, http.StatusCreated, res.Status, "%s", res.Body)
	docs := [2][]byte{alternatingWorkspace("a", "internal-root-ca", 2000), alternatingWorkspace("b", "internal-root-ca", 2000)}
	run := func(b *testing.B, deploy func(doc []byte)) {
		deploy(docs[1]) // the first measured deploy replaces a full workspace
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			deploy(docs[i%2])
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	}
	b.Run("service", func(b *testing.B) {
		run(b, func(doc []byte) {
			ws, err := refs.Parse(doc)
			if err != nil {
				b.Fatal(err)
			}
			res, err := env.Workspace.Deploy(context.Background(), "acme", ws, 0)
			if err != nil {
				b.Fatal(err)
			}
			if res.References != 2000 {
				b.Fatalf("%d references", res.References)
			}
		})
	})
	b.Run("http", func(b *testing.B) {
		run(b, func(doc []byte) {
			res := env.Do(b, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: tok, Body: doc})
			if res.Status != http.StatusOK {
				b.Fatalf("%d %s", res.Status, res.Body)
			}
		})
	})
}
