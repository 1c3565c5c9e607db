package nodetls_test

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/nodetls"
)

// benchStore is a file of n nodes, each referencing its own stored inline client pair,
// and one node with a direct ECDSA file pair.
func benchStore(b *testing.B, n int) *nodetls.Store {
	f := newFixture(b)
	ca := materialtest.NewCA(b, materialtest.Options{})
	pairs := make([]*materialtest.Cert, 8)
	for i := range pairs {
		pairs[i] = ca.Issue(b, materialtest.Options{CommonName: fmt.Sprintf("edge-%d", i)})
	}
	nodes := make([]map[string]any, 0, n+1)
	for i := range n {
		id := fmt.Sprintf("pair-%d", i)
		f.inline(id, material.ClientPair, pairs[i%len(pairs)], true)
		nodes = append(nodes, node(fmt.Sprintf("n%d", i), "mqtt-broker", map[string]any{"clientCertRef": id}))
	}
	dir := b.TempDir()
	nodes = append(nodes, node("direct", "tcp-out", map[string]any{
		"clientCertFile": materialtest.WriteFile(b, dir, "c.crt", pairs[0].CertPEM()),
		"clientKeyFile":  materialtest.WriteFile(b, dir, "c.key", pairs[0].KeyPEM())}))
	f.workspace(b, nodes...)
	f.write(b)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), FileRoots: dir})
	require.NoError(b, err)
	b.Cleanup(func() { _ = store.Close() })
	return store
}

func BenchmarkConfigInline(b *testing.B) {
	store := benchStore(b, 1000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := store.Config(ctx, "line-1", fmt.Sprintf("n%d", i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkConfigDirectFile(b *testing.B) {
	store := benchStore(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := store.Config(ctx, "line-1", "direct"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconnectStorm: 10,000 calls over 1,000 nodes from 64 goroutines, on a freshly
// opened file each time.
func BenchmarkReconnectStorm(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		store := benchStore(b, 1000)
		b.StartTimer()
		var wg sync.WaitGroup
		for w := range 64 {
			wg.Go(func() {
				for i := w; i < 10_000; i += 64 {
					if _, err := store.Config(ctx, "line-1", fmt.Sprintf("n%d", i%1000)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

// The parallel benchmarks run 8 callers (as make bench does) and report the latency
// percentiles of single calls: the tail is what a connection init under load sees.
func BenchmarkConfigInlineParallel(b *testing.B) {
	store := benchStore(b, 1000)
	benchParallel(b, func(i int) string { return fmt.Sprintf("n%d", i%1000) }, store)
}

func BenchmarkConfigDirectFileParallel(b *testing.B) {
	store := benchStore(b, 1)
	benchParallel(b, func(int) string { return "direct" }, store)
}

func benchParallel(b *testing.B, nodeID func(int) string, store *nodetls.Store) {
	b.ReportAllocs()
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
	var (
		mu  sync.Mutex
		all []time.Duration
	)
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1<<14)
		i := 0
		for pb.Next() {
			id := nodeID(i)
			t0 := time.Now()
			if _, err := store.Config(ctx, "line-1", id); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t0))
			i += 7
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) }
	b.ReportMetric(q(0.5), "p50-ns")
	b.ReportMetric(q(0.99), "p99-ns")
	b.ReportMetric(q(0.999), "p99.9-ns")
}
