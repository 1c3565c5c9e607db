package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/tenantkey"
)

// Tenants of the run, each serving one purpose so scenarios do not disturb each other.
const (
	tenantMain   = "bench"  // Entries client pairs: GET, list, BuildTLSConfig, export
	tenantPost   = "post"   // the versions listing; the POST load goes to postTenant(run)
	tenantSync   = "sync"   // Entries client pairs: the runtime's Sync lag
	tenantRefs   = "refs"   // one CA referenced by References nodes: the DELETE conflict
	tenantDeploy = "deploy" // workspace deploys
	tenantEdge   = "edge"   // edgeEntries client pairs: the credentials route's slow readers and long polls
	refdEntry    = "referenced-ca"
	deployCA     = "internal-root-ca"
)

// bench is one run: its settings, what it started, and what it measured so far.
type bench struct {
	s      settings
	out    io.Writer
	log    *slog.Logger
	report *Report

	tmp      string
	pg       *cluster
	srv      *server
	keys     *tenantkey.Keys // the server's master key and the tenant keys under it
	pool     *pgxpool.Pool   // the server's kind of pool (app role, RLS), for in-process scenarios
	pki      *pki
	seed     *seeder
	client   *http.Client
	tokens   map[string]string // "tenant/role" -> JWT
	ids      []string          // IDs of the main tenant's entries
	cleanups []func() error
	inproc   http.Handler // the server's handler in this process, for profiles
	// profileTops are the pprof excerpts of the targets missed, printed after the table.
	profileTops []string

	// Figures later rows are judged against.
	selectTPS, insertTPS, pgxTPS float64
	getP99                       time.Duration
	ourDeployP50                 time.Duration

	// run is the repetition under way (1 to runs); rows collects each one's rows.
	run   int
	rows  [][]Row
	scale bool // the scale scenario's tenants are seeded
}

// runs is how many times every scenario runs; the table shows the median and the spread.
const runs = 3

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func (b *bench) onCleanup(f func() error) { b.cleanups = append(b.cleanups, f) }

// cleanup undoes setup in reverse order and reports every failure.
func (b *bench) cleanup() error {
	var errs []error
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		if err := b.cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	b.cleanups = nil
	return errors.Join(errs...)
}

// setup starts PostgreSQL, migrates, seeds, builds and starts the server and mints tokens.
func (b *bench) setup(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "loopze-bench-")
	if err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	b.onCleanup(func() error { return os.RemoveAll(tmp) })
	// The postgres user must reach the cluster directory inside.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("open work dir to the postgres user: %w", err)
	}
	b.tmp = tmp

	t0 := time.Now()
	bin, err := buildServer(ctx, b.s.Root, tmp)
	if err != nil {
		return err
	}
	b.progress("built the server in %s", since(t0))

	t0 = time.Now()
	if b.pg, err = startCluster(ctx, tmp, b.log); err != nil {
		return err
	}
	b.onCleanup(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return b.pg.Stop(ctx)
	})
	if b.report.Postgres, err = b.pg.facts(ctx); err != nil {
		return err
	}
	for k, v := range settingsWithStatements() {
		b.report.Postgres["bench setting "+k] = v
	}
	if err := b.pg.exec(ctx, appDatabase, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return err
	}
	url := b.pg.URL(appDatabase)
	if _, err := db.Migrate(ctx, url, b.log); err != nil {
		return err
	}
	b.progress("PostgreSQL %s up and migrated in %s (fsync=%s, synchronous_commit=%s)", b.report.Postgres["server_version"],
		since(t0), b.report.Postgres["fsync"], b.report.Postgres["synchronous_commit"])

	dataDir := filepath.Join(tmp, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if b.pool, err = db.Open(ctx, url, b.log); err != nil {
		return err
	}
	b.onCleanup(func() error { b.pool.Close(); return nil })
	// The bench creates the master key the server then loads, and the tenant keys under
	// it, so it can seal seeded rows exactly as the server would.
	master, err := masterkey.Open("", dataDir, os.Getenv, b.log)
	if err != nil {
		return fmt.Errorf("load master key: %w", err)
	}
	b.onCleanup(master.Close)
	b.keys = &tenantkey.Keys{Pool: b.pool, Master: master, Logger: b.log}
	if b.pki, err = newPKI(4); err != nil {
		return err
	}
	b.seed = &seeder{url: url, keys: b.keys, pki: b.pki}
	if err := b.seedBase(ctx); err != nil {
		return err
	}

	if b.srv, err = newServer(bin, dataDir, url); err != nil {
		return err
	}
	t0 = time.Now()
	if err := b.srv.start(ctx); err != nil {
		return err
	}
	b.onCleanup(b.srv.stop)
	b.progress("server up at %s in %s (pid %d)", b.srv.base, since(t0), b.srv.pid())

	b.tokens = map[string]string{}
	roles := []string{tenantMain + "/viewer", tenantMain + "/editor", tenantPost + "/editor", tenantKDF + "/editor",
		tenantSync + "/editor", tenantEdge + "/editor", tenantRefs + "/editor", tenantDeploy + "/editor"}
	for run := 1; run <= runs; run++ {
		roles = append(roles, postTenant(run)+"/editor")
	}
	for _, tr := range roles {
		tenant, role, _ := strings.Cut(tr, "/")
		tok, err := b.srv.token(ctx, tenant, role)
		if err != nil {
			return err
		}
		b.tokens[tr] = tok
	}
	b.client = newClient(b.s.Concurrency)
	b.onCleanup(func() error { b.client.CloseIdleConnections(); return nil })
	return nil
}

// seedBase writes the data every scenario but the scale one needs.
func (b *bench) seedBase(ctx context.Context) error {
	t0 := time.Now()
	if err := b.seed.clientPairs(ctx, []string{tenantMain, tenantSync}, b.s.Entries, 1); err != nil {
		return err
	}
	if err := b.seed.clientPairs(ctx, []string{tenantEdge}, edgeEntries, 1); err != nil {
		return err
	}
	b.ids = make([]string, b.s.Entries)
	for i := range b.ids {
		b.ids[i] = entryID(i)
	}
	conn, err := pgx.Connect(ctx, b.seed.url)
	if err != nil {
		return fmt.Errorf("connect to seed: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tenants := []string{tenantPost, tenantRefs, tenantDeploy}
	for run := 1; run <= runs; run++ {
		tenants = append(tenants, postTenant(run))
	}
	if err := ensureTenants(ctx, conn, tenants); err != nil {
		return err
	}
	for _, te := range [][2]string{{tenantRefs, refdEntry}, {tenantDeploy, deployCA}} {
		row, err := b.seed.caBundleRow(ctx, te[0], te[1])
		if err != nil {
			return err
		}
		if err := insertRow(ctx, conn, row); err != nil {
			return err
		}
	}
	if err := analyze(ctx, conn); err != nil {
		return err
	}
	b.progress("seeded %d entries in %s", 2*b.s.Entries+edgeEntries+2, since(t0))
	return nil
}

// postTenant is the tenant the POST load of a run goes to: each run starts from an empty
// tenant, so the three runs measure the same thing (the export's cost grows with the tenant).
func postTenant(run int) string { return fmt.Sprintf("post-r%d", run) }

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }

// add appends a row to the report and echoes it.
func (b *bench) add(r Row) {
	b.rows[b.run-1] = append(b.rows[b.run-1], r)
	extra := ""
	if r.Note != "" {
		extra = " (" + r.Note + ")"
	}
	b.progress("  %-44s %s%s", r.Scenario, r.Status, extra)
}

// runAll runs the baselines and the scenarios in an order that keeps each one's data
// undisturbed by the ones before it; the scale scenario, which grows the database a
// hundredfold, comes last.
func (b *bench) runAll(ctx context.Context) {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"KDF flood", b.scenarioKDFFlood},
		{"largest workspace", b.scenarioBigWorkspace},
		{"credentials slow readers", b.scenarioSlowReaders},
		{"credentials long polls", b.scenarioLongPolls},
		{"baselines", b.baselines},
		{"GET by ID", b.scenarioGet},
		{"GET list", b.scenarioList},
		{"POST", b.scenarioPost},
		{"history listing", b.scenarioVersions},
		{"BuildTLSConfig", b.scenarioBuildTLS},
		{"DELETE conflict", b.scenarioDelete},
		{"workspace deploy", b.scenarioDeploy},
		{"Node-RED deploy", b.scenarioNodeRED},
		{"export", b.scenarioExport},
		{"runtime Config", b.scenarioRuntime},
		{"runtime Sync lag", b.scenarioSyncLag},
		{"scale", b.scenarioScale},
		{"master key rotation", b.scenarioRotation},
		{"replicas", b.scenarioReplicas},
	}
	// Every scenario runs three times, its baselines measured again each time, so a row is
	// the median of three ratios of the same run (and shows their spread) instead of one
	// draw of a noisy machine.
	defer func() { b.report.Rows = mergeRuns(b.rows) }()
	b.rows = make([][]Row, runs)
	for b.run = 1; b.run <= runs; b.run++ {
		for _, st := range steps {
			if ctx.Err() != nil {
				return
			}
			if len(b.s.Only) > 0 && !slices.Contains(b.s.Only, st.name) {
				continue
			}
			t0 := time.Now()
			b.progress("%s (run %d of %d) ...", st.name, b.run, runs)
			if err := st.fn(ctx); err != nil {
				b.progress("%s failed: %v", st.name, err)
				b.report.Notes = append(b.report.Notes, fmt.Sprintf("%s (run %d) failed: %v", st.name, b.run, err))
			}
			b.progress("%s done in %s", st.name, since(t0))
		}
	}
}

// lastRun reports whether this is the last repetition: profiles are taken only then.
func (b *bench) lastRun() bool { return b.run == runs }

// finish prints the table and the facts, saves the JSON and profiles what missed.
func (b *bench) finish() error {
	b.report.Elapsed = time.Since(b.report.StartedAt).Round(time.Second).String()
	fmt.Fprintln(b.out)
	if err := WriteTable(b.out, b.report.Rows); err != nil {
		return err
	}
	b.writeProfiles(b.out)
	fmt.Fprintln(b.out)
	fmt.Fprintln(b.out, "baselines (same run):")
	for _, bl := range b.report.Baselines {
		fmt.Fprintf(b.out, "  %-16s %-10s %s\n", bl.Name, fmtRate(bl.Throughput), bl.Command)
	}
	fmt.Fprintln(b.out)
	WriteFacts(b.out, "machine", b.report.Machine)
	WriteFacts(b.out, "postgres", b.report.Postgres)
	for _, n := range b.report.Notes {
		fmt.Fprintln(b.out, "note:", n)
	}
	path, err := b.report.Save(b.s.ResultsDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\n%d concurrent clients, %s per load scenario%s; whole run %s; written to %s\n",
		b.s.Concurrency, b.s.Duration, map[bool]string{true: " (BENCH_QUICK)", false: ""}[b.s.Quick], b.report.Elapsed, path)
	return nil
}
