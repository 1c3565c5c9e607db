package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
)

// rssCeiling is the scale scenario's memory target for the server process.
const rssCeiling = 150 << 20

// scenarioScale: GET by ID over many tenants of many entries each (1,000 x 1,000 = 1M rows
// in the full run), compared with the p99 of the 10k-entry run; and the server's peak
// resident memory while serving it.
func (b *bench) scenarioScale(ctx context.Context) error {
	nt, per := b.s.ScaleTenants, b.s.ScalePerTenant
	name := fmt.Sprintf("GET /certs/{id}, %d tenants x %d", nt, per)
	tenants, err := b.seedScale(ctx)
	if err != nil {
		return err
	}

	// One viewer token per tenant, signed with the server's secret the way the token
	// subcommand signs (running it a thousand times would only measure process starts).
	key, err := auth.LoadHMACSecret("", b.srv.dataDir)
	if err != nil {
		return fmt.Errorf("load the server's JWT secret: %w", err)
	}
	tokens := make([]string, nt)
	for i, t := range tenants {
		if tokens[i], err = auth.Mint(key, auth.Principal{Subject: "bench", Tenant: t, Role: auth.Viewer}, 3*time.Hour, "", "", time.Now()); err != nil {
			return err
		}
	}

	// Writing 5 to clear_refs resets the peak (VmHWM), so the peak read afterwards is this
	// scenario's; where the kernel refuses, it is the process's lifetime peak.
	peakNote := "peak RSS during this scenario"
	if err := os.WriteFile("/proc/"+strconv.Itoa(b.srv.pid())+"/clear_refs", []byte("5"), 0); err != nil {
		peakNote = "peak RSS over the server's lifetime (could not reset the peak)"
	}
	req := func(_, _ int, rnd *rand.Rand) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, b.srv.base+"/api/v1/certs/"+entryID(rnd.IntN(per)), nil)
		r.Header.Set("Authorization", "Bearer "+tokens[rnd.IntN(nt)])
		return r
	}
	res := runLoad(ctx, b.s.Concurrency, b.s.Warmup, b.s.Duration, b.httpOp(req, http.StatusOK))
	r := loadRow(name, res)
	p99 := res.Hist.Quantile(0.99)
	r.Target = "p99 <= 1.5 x the 10k run's p99"
	if b.getP99 > 0 {
		r.Baseline = "10k run p99 " + fmtDur(b.getP99)
		r.Ratio = float64(p99) / float64(b.getP99)
		r.Status = judge(r.Errors == 0 && r.Ratio <= 1.5)
	} else {
		r.Status = statusNotAvailable
	}
	b.add(r)
	b.profileHTTP(ctx, r, "scale-get", b.s.Concurrency, req, http.StatusOK)

	peak, err := procStatus(b.srv.pid(), "VmHWM")
	if err != nil {
		return err
	}
	cur, _ := procStatus(b.srv.pid(), "VmRSS")
	b.add(Row{Scenario: fmt.Sprintf("server RSS, %d tenants x %d", nt, per), Target: "< 150 MiB", Status: judge(peak < rssCeiling),
		Baseline: fmt.Sprintf("peak %s", fmtMiB(peak)), PeakBytes: peak, Note: fmt.Sprintf("%s %s; %s resident at the end", peakNote, fmtMiB(peak), fmtMiB(cur))})
	return nil
}

// scaleTenant is the i-th tenant of the scale scenario.
func scaleTenant(i int) string { return fmt.Sprintf("s%04d", i) }

// seedScale seeds the scale scenario's tenants, ScaleTenants of ScalePerTenant client pairs
// each (once, for every run and every scenario that uses them), and waits until the server
// exported each one; it returns their IDs.
func (b *bench) seedScale(ctx context.Context) ([]string, error) {
	nt, per := b.s.ScaleTenants, b.s.ScalePerTenant
	tenants := make([]string, nt)
	for i := range tenants {
		tenants[i] = scaleTenant(i)
	}
	if b.scale {
		return tenants, nil
	}
	t0 := time.Now()
	if err := b.seed.clientPairs(ctx, tenants, per, runtime.NumCPU()); err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, b.seed.url)
	if err != nil {
		return nil, fmt.Errorf("connect to analyze: %w", err)
	}
	err = analyze(ctx, conn)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	b.progress("  seeded %d entries in %d tenants in %s", nt*per, nt, since(t0))
	t0 = time.Now()
	if err := b.settleExports(ctx, tenants); err != nil {
		return nil, err
	}
	b.progress("  the server exported every seeded tenant in %s", since(t0))
	b.scale = true
	return tenants, nil
}

func fmtMiB(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// settleExports announces every seeded tenant (the seeding wrote the tables directly) and
// waits until the server wrote each one's file at its generation, so that no export is
// pending, or running, while the scenario measures.
func (b *bench) settleExports(ctx context.Context, tenants []string) error {
	for _, t := range tenants {
		if err := db.InTenant(ctx, b.pool, t, func(tx pgx.Tx) error {
			_, err := repo.BumpGeneration(ctx, tx, t)
			return err
		}); err != nil {
			return fmt.Errorf("announce seeded tenant %s: %w", t, err)
		}
	}
	want := make(map[string]bool, len(tenants))
	for _, t := range tenants {
		want[t] = true
	}
	deadline := time.Now().Add(15 * time.Minute)
	for {
		all, err := repo.ListTenants(ctx, b.pool)
		if err != nil {
			return err
		}
		pending := 0
		for _, t := range all {
			if !want[t.ID] {
				continue
			}
			if gen, ok := fileGeneration(credfile.Path(b.srv.dataDir, t.ID)); !ok || gen != t.Generation {
				pending++
			}
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d seeded tenants still not exported after 15 minutes", pending)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
