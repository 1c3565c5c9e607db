package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/workspace"
)

// profileTopLines is how much of `go tool pprof -top` the run prints per profile.
const profileTopLines = 14

// handler is the server's HTTP handler built in this process over the run's database and
// data dir, wired as cmd/server wires it (a catalogue with its read cache, kept by its own
// export loop), so an HTTP scenario can be CPU-profiled without profiling endpoints in the
// product: requests go straight to ServeHTTP, no network. The replica behind it lives
// until the run ends.
func (b *bench) handler(ctx context.Context) (http.Handler, error) {
	if b.inproc != nil {
		return b.inproc, nil
	}
	key, err := auth.LoadHMACSecret("", b.srv.dataDir)
	if err != nil {
		return nil, fmt.Errorf("load the server's JWT secret: %w", err)
	}
	verifier, err := auth.NewVerifier(auth.Config{HMACSecret: key})
	if err != nil {
		return nil, fmt.Errorf("JWT verifier: %w", err)
	}
	rep, err := b.newReplica(ctx)
	if err != nil {
		return nil, err
	}
	b.onCleanup(func() error { rep.stop(); return nil })
	cat := rep.svc
	ws := &workspace.Service{Pool: b.pool, Keys: b.keys, Logger: b.log, Resolver: &resolver.Resolver{Entries: cat.Entries(), Roots: cat.Roots, Logger: b.log}}
	b.inproc = api.New(api.Deps{Logger: b.log, Pool: b.pool, Version: "bench", Verifier: verifier, Catalog: cat, Workspace: ws}).Handler
	return b.inproc, nil
}

// handlerOp turns an HTTP operation of a scenario into a call of the in-process handler.
// req builds the request for worker w's i-th operation.
func (b *bench) handlerOp(h http.Handler, req func(w, i int, rnd *rand.Rand) *http.Request, want int) Op {
	counts := make([]int, b.s.Concurrency)
	return func(ctx context.Context, w int, rnd *rand.Rand) error {
		r := req(w, counts[w], rnd).WithContext(ctx)
		counts[w]++
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != want {
			return &errStatus{method: r.Method, path: r.URL.Path, code: rec.Code, body: truncate(rec.Body.String(), 300)}
		}
		return nil
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// profile runs op under a CPU profile when row missed its target, writes the profile and
// its `go tool pprof -top` next to the JSON, and prints the top entries.
// conc is the concurrency of the profiled run (1 for scenarios measured one at a time).
func (b *bench) profile(ctx context.Context, row Row, name string, conc int, op Op) {
	if !b.lastRun() {
		return
	}
	if !b.s.Profile || row.Status != statusNotMet || ctx.Err() != nil {
		return
	}
	if err := os.MkdirAll(b.s.ResultsDir, 0o755); err != nil {
		b.progress("  profile %s: %v", name, err)
		return
	}
	stem := filepath.Join(b.s.ResultsDir, b.report.StartedAt.UTC().Format("20060102T150405Z")+"-"+name)
	f, err := os.Create(stem + ".pprof")
	if err != nil {
		b.progress("  profile %s: %v", name, err)
		return
	}
	defer f.Close()
	if err := b.pg.resetStatements(ctx); err != nil {
		b.progress("  profile %s: %v", name, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.progress("  profile %s: %v", name, err)
		return
	}
	res := runLoad(ctx, conc, 0, profileDuration(b.s), op)
	pprof.StopCPUProfile()
	stmts, err := b.pg.topStatements(ctx, 6)
	if err != nil {
		stmts = err.Error() + "\n"
	}
	flat, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=40", f.Name()).CombinedOutput()
	if err != nil {
		b.progress("  pprof %s: %v", name, err)
		return
	}
	cum, _ := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount=60", f.Name()).CombinedOutput()
	header := fmt.Sprintf("# %s: in-process equivalent of %q, %d ops at %.0f/s, p50 %s, p99 %s, %d errors\n",
		name, row.Scenario, res.Ops, res.Throughput(), fmtDur(res.Hist.Quantile(0.5)), fmtDur(res.Hist.Quantile(0.99)), res.Errors)
	full := header + "\n## PostgreSQL: top statements by execution time during the profile\n" + stmts +
		"\n## Go CPU profile, flat\n" + string(flat) + "\n## Go CPU profile, cumulative\n" + string(cum)
	if err := os.WriteFile(stem+".top.txt", []byte(full), 0o644); err != nil {
		b.progress("  profile %s: %v", name, err)
		return
	}
	b.report.Profiles = append(b.report.Profiles, stem+".top.txt")
	b.profileTops = append(b.profileTops, header+"PostgreSQL, top statements by execution time:\n"+stmts+
		"Go CPU profile, flat:\n"+topLines(flat, profileTopLines))
}

// profileDuration is long enough for a profile worth reading, short enough to keep the run
// under its budget.
func profileDuration(s settings) time.Duration { return min(s.Duration/2, 8*time.Second) }

// topLines keeps pprof's header and the first n entries of its table.
func topLines(out []byte, n int) string {
	var b strings.Builder
	lines := strings.Split(string(bytes.TrimSpace(out)), "\n")
	entries := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue // the same for every profile of the run
		}
		b.WriteString(l + "\n")
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			entries = 1
			continue
		}
		if entries > 0 {
			entries++
			if entries > n {
				break
			}
		}
	}
	return b.String()
}

// writeProfiles prints the collected tops.
func (b *bench) writeProfiles(w io.Writer) {
	for _, t := range b.profileTops {
		fmt.Fprintln(w)
		fmt.Fprint(w, t)
	}
}

// profileHTTP profiles an HTTP scenario that missed its target through the in-process
// handler.
func (b *bench) profileHTTP(ctx context.Context, row Row, name string, conc int, req func(w, i int, rnd *rand.Rand) *http.Request, want int) {
	if !b.lastRun() {
		return
	}
	if !b.s.Profile || row.Status != statusNotMet {
		return
	}
	h, err := b.handler(ctx)
	if err != nil {
		b.progress("  profile %s: %v", name, err)
		return
	}
	b.profile(ctx, row, name, conc, b.handlerOp(h, req, want))
}
