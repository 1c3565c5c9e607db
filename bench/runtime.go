package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/nodetls"
)

// Sizes of the runtime scenarios.
const (
	runtimeNodes        = 1_000
	stormCalls          = 10_000
	stormWorkers        = 64
	syncChangesFull     = 100
	syncChangesQuick    = 20
	runtimeInlineTarget = 50 * time.Microsecond
	runtimeFileTarget   = 300 * time.Microsecond
	stormTarget         = time.Second
	syncLagTarget       = time.Second
)

// runtimeFixture writes a runtime's data directory: the tenant's runtime key and a credentials.json
// of runtimeNodes client pairs (the run's ECDSA P-256 pairs) with one node each
// referencing its pair, plus one node whose pair is a direct file pair on disk.
func (b *bench) runtimeFixture() (dir string, err error) {
	dir = filepath.Join(b.tmp, "runtime")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create runtime dir: %w", err)
	}
	ctx := context.Background()
	fk, err := b.keys.FileKey(ctx, tenantMain)
	if err != nil {
		return "", err
	}
	rk, err := (&credfile.RuntimeKey{Tenant: tenantMain, Keys: map[int]secret.Bytes{fk.TenantKey.Version: fk.Key}}).Marshal()
	if err != nil {
		return "", err
	}
	if err := fileexport.WriteAtomic(filepath.Join(dir, runtimeKeyFile), rk); err != nil {
		return "", err
	}
	p := b.pki.pairs[0]
	certPath, keyPath := filepath.Join(dir, "direct.crt"), filepath.Join(dir, "direct.key")
	if err := os.WriteFile(certPath, p.cert, 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(keyPath, p.key, 0o600); err != nil {
		return "", err
	}
	doc := &credfile.Document{Tenant: tenantMain, Generation: 1, ExportedAt: time.Now().UTC()}
	nodes := make([]map[string]any, 0, runtimeNodes+1)
	for i := range runtimeNodes {
		pp := b.pki.pairs[i%len(b.pki.pairs)]
		id := fmt.Sprintf("rt-pair-%04d", i)
		doc.Entries = append(doc.Entries, credfile.Entry{ID: id, Type: "client-pair", Source: "inline",
			CertPEM: string(pp.cert), KeyPEM: string(pp.key)})
		nodes = append(nodes, map[string]any{"id": runtimeNode(i), "type": "mqtt-broker", "tls": map[string]any{"clientCertRef": id}})
	}
	nodes = append(nodes, map[string]any{"id": "rt-direct", "type": "tcp-out",
		"tls": map[string]any{"clientCertFile": certPath, "clientKeyFile": keyPath}})
	if doc.Workspace, err = json.Marshal(map[string]any{"flows": []any{map[string]any{"id": "rt-flow", "nodes": nodes}}}); err != nil {
		return "", err
	}
	data, _, err := credfile.Seal(fk, doc)
	if err != nil {
		return "", err
	}
	return dir, fileexport.WriteAtomic(filepath.Join(dir, credfile.FileName), data)
}

func runtimeNode(i int) string { return fmt.Sprintf("rt-node-%04d", i) }

// runtimeKeyFile is the runtime key in the runtime's directory.
const runtimeKeyFile = "runtime.key"

func openRuntime(dir string) (*nodetls.Store, error) {
	return nodetls.New(nodetls.Options{File: filepath.Join(dir, credfile.FileName),
		KeyFile: filepath.Join(dir, runtimeKeyFile), FileRoots: dir})
}

// configOp is one connection init of a node through the runtime package.
func configOp(store *nodetls.Store, node func(rnd *rand.Rand) string) Op {
	return func(ctx context.Context, _ int, rnd *rand.Rand) error {
		cfg, err := store.Config(ctx, "rt-flow", node(rnd))
		if err != nil {
			return err
		}
		if cfg.GetClientCertificate == nil {
			return errors.New("nodetls Config: no client certificate in the config")
		}
		return nil
	}
}

// scenarioRuntime: the runtime package's Config from credentials.json, in process: a
// stored inline client-pair reference from the snapshot; a direct-file ECDSA pair read
// from disk every call; and a reconnect storm of 10,000 calls over 1,000 nodes from 64
// goroutines on a freshly opened file (every pair parsed once, during the storm).
func (b *bench) scenarioRuntime(ctx context.Context) error {
	dir, err := b.runtimeFixture()
	if err != nil {
		return err
	}
	store, err := openRuntime(dir)
	if err != nil {
		return err
	}
	defer store.Close()

	inline := configOp(store, func(rnd *rand.Rand) string { return runtimeNode(rnd.IntN(runtimeNodes)) })
	res := runLoad(ctx, b.s.Concurrency, b.s.Warmup, b.s.Duration, inline)
	p99 := res.Hist.Quantile(0.99)
	b.add(underRow(loadRow("nodetls Config, inline client-pair ref (in process)", res), "p99", p99, runtimeInlineTarget))

	direct := configOp(store, func(*rand.Rand) string { return "rt-direct" })
	res = runLoad(ctx, b.s.Concurrency, b.s.Warmup, b.s.Duration, direct)
	p99 = res.Hist.Quantile(0.99)
	b.add(underRow(loadRow("nodetls Config, direct-file ECDSA pair (in process)", res), "p99", p99, runtimeFileTarget))

	r, err := b.reconnectStorm(ctx, dir)
	if err != nil {
		return err
	}
	b.add(r)
	return nil
}

// reconnectStorm issues stormCalls Config calls for runtimeNodes distinct nodes at once
// from stormWorkers goroutines and times the whole.
func (b *bench) reconnectStorm(ctx context.Context, dir string) (Row, error) {
	store, err := openRuntime(dir)
	if err != nil {
		return Row{}, err
	}
	defer store.Close()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		hist  Histogram
		fails uint64
		first error
	)
	calls := make(chan int, stormCalls)
	for i := range stormCalls {
		calls <- i
	}
	close(calls)
	start := time.Now()
	for range stormWorkers {
		wg.Go(func() {
			var h Histogram
			var n uint64
			var ferr error
			for i := range calls {
				t0 := time.Now()
				_, err := store.Config(ctx, "rt-flow", runtimeNode(i%runtimeNodes))
				h.Record(time.Since(t0))
				if err != nil {
					n++
					ferr = cmpErr(ferr, err)
				}
			}
			mu.Lock()
			hist.Merge(&h)
			fails += n
			first = cmpErr(first, ferr)
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	r := Row{Scenario: fmt.Sprintf("nodetls reconnect storm: %dk calls, %d nodes, %d goroutines", stormCalls/1000, runtimeNodes, stormWorkers),
		Throughput: float64(stormCalls) / took.Seconds(), Ops: uint64(stormCalls) - fails, Errors: fails,
		P50: Millis(hist.Quantile(0.5)), P99: Millis(hist.Quantile(0.99))}
	r = underRow(r, "all calls", took, stormTarget)
	r.Note = fmt.Sprintf("all %d calls took %s on a freshly opened file", stormCalls, fmtDur(took))
	if fails > 0 {
		r.Note = joinNote(r.Note, fmt.Sprintf("%d failed; first: %v", fails, first))
	}
	return r, nil
}

// scenarioSyncLag: a runtime on "another machine" keeps a copy with nodetls.Sync over
// GET /api/v1/credentials of a tenant of Entries client pairs; each change is a POST
// (committed when it answers 201), its lag the time until the runtime's local file
// carries that generation.
func (b *bench) scenarioSyncLag(ctx context.Context) error {
	tok, err := b.srv.token(ctx, tenantSync, "runtime")
	if err != nil {
		return err
	}
	dir := filepath.Join(b.tmp, "runtime-sync")
	written := make(chan int64, 64)
	syncCtx, stop := context.WithCancel(ctx)
	defer stop()
	s := &nodetls.Syncer{BaseURL: b.srv.base, Token: tok, Dir: dir, AllowLoopbackHTTP: true, OnWrite: func(g int64) { written <- g }}
	syncErr := make(chan error, 1)
	go func() { syncErr <- s.Run(syncCtx) }()

	conn, err := pgx.Connect(ctx, b.seed.url)
	if err != nil {
		return fmt.Errorf("connect for the sync lag: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	n := syncChangesFull
	if b.s.Quick {
		n = syncChangesQuick
	}
	var (
		hist    Histogram
		local   int64 = -1
		timeout int
	)
	for i := range n {
		if err := do(ctx, b.client, b.request(http.MethodPost, "/api/v1/certs", tenantSync+"/editor", b.postBody(fmt.Sprintf("sync-r%d-%05d", b.run, i), i)), http.StatusCreated); err != nil {
			return fmt.Errorf("POST for the sync lag: %w", err)
		}
		committed := time.Now()
		var gen int64
		if err := func() (err error) { gen, err = repo.GetGeneration(ctx, conn, tenantSync); return }(); err != nil {
			return fmt.Errorf("read generation: %w", err)
		}
		deadline := time.After(15 * time.Second)
		for local < gen {
			select {
			case g := <-written:
				local = max(local, g)
			case err := <-syncErr:
				return fmt.Errorf("sync stopped: %w", err)
			case <-deadline:
				timeout++
				local = gen
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		hist.Record(time.Since(committed))
	}
	p99 := hist.Quantile(0.99)
	r := Row{Scenario: "nodetls Sync lag: POST committed to the runtime's local file", Ops: uint64(n - timeout), Errors: uint64(timeout),
		P50: Millis(hist.Quantile(0.5)), P99: Millis(p99)}
	r = underRow(r, "p99", p99, syncLagTarget)
	r.Note = fmt.Sprintf("%d changes, one at a time, long poll woken by the export job", n)
	b.add(r)
	return nil
}
