package resolver_test

import (
	"context"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/secret"
)

// benchEnv stores an inline client-pair and CA, and a file client-pair, in tenant acme.
func benchEnv(b *testing.B) (*apitest.Env, *materialtest.Cert, *materialtest.Cert) {
	// The file entry lives in a temp dir: tenants other than the default read files only
	// inside LOOPZE_FILE_ROOTS.
	env := apitest.New(b, apitest.Options{FileRoots: os.TempDir()})
	tok := env.Token(b, "acme", "editor")
	ca := materialtest.NewCA(b, materialtest.Options{})
	client := ca.Issue(b, materialtest.Options{})
	dir := b.TempDir()
	for _, body := range []map[string]any{
		{"id": "root-ca", "name": "CA", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM())},
		{"id": "edge", "name": "edge", "type": "client-pair", "source": "inline", "certPem": string(client.ChainPEM()), "keyPem": string(client.KeyPEM())},
		{"id": "edge-file", "name": "edge", "type": "client-pair", "source": "file",
			"certPath": apitest.WriteFile(b, dir, "c.crt", client.ChainPEM()), "keyPath": apitest.WriteFile(b, dir, "c.key", client.KeyPEM())},
	} {
		res := env.Do(b, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body})
		require.Equal(b, http.StatusCreated, res.Status, "%s", res.Body)
	}
	return env, ca, client
}

// runTimed runs build b.N times and reports p50 and p99 latencies beside ns/op.
func runTimed(b *testing.B, build func() error) {
	b.Helper()
	b.ReportAllocs()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := build(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkBuildTLSConfig(b *testing.B) {
	env, ca, client := benchEnv(b)
	r := env.Workspace.Resolver
	ctx := context.Background()
	blocks := []struct {
		name  string
		block *refs.TLS
	}{
		{"inline-client-pair-ref", &refs.TLS{ClientCert: refs.PartSpec{Ref: "edge"}}},
		{"inline-ca-and-client-refs", &refs.TLS{CABundle: refs.PartSpec{Ref: "root-ca"}, ClientCert: refs.PartSpec{Ref: "edge"}}},
		{"file-client-pair-ref", &refs.TLS{ClientCert: refs.PartSpec{Ref: "edge-file"}}},
		{"inline-pem-block", &refs.TLS{
			CABundle: refs.PartSpec{CertPEM: &refs.Value{Text: secret.String(ca.CertPEM())}},
			ClientCert: refs.PartSpec{CertPEM: &refs.Value{Text: secret.String(client.ChainPEM())},
				KeyPEM: &refs.Value{Text: secret.String(client.KeyPEM())}}}},
	}
	for _, bl := range blocks {
		b.Run(bl.name, func(b *testing.B) {
			runTimed(b, func() error {
				_, err := r.BuildTLSConfig(ctx, "acme", bl.block)
				return err
			})
		})
	}
}
