// Command bench is `make bench`: load, latency and scale benchmarks of the certificate
// store against raw PostgreSQL measured in the same run. It starts a throwaway PostgreSQL
// cluster (the test harness's settings), builds and starts the real server binary against
// it, seeds data straight into the tables, runs the raw-PostgreSQL baselines (pgbench and
// raw pgx) and the scenarios with its own closed-loop load generator, optionally a
// Node-RED peer, and prints one table, also written as JSON to bench/results/.
//
// Every figure is a ratio against a baseline of the same run or a latency percentile:
// the machines it runs on are shared and noisy, so absolute numbers mean little.
//
//	go run ./bench            # about 8 minutes on 2 cores
//	BENCH_QUICK=1 go run ./bench   # about a minute, for smoke checks
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// settings size a run; quick shrinks every scenario for a smoke check.
type settings struct {
	Quick          bool
	Concurrency    int
	Warmup         time.Duration
	Duration       time.Duration
	Entries        int // entries of the main tenant (GET, list, BuildTLSConfig, export) and of the Sync lag's
	ScaleTenants   int // tenants x ScalePerTenant entries for the scale scenario
	ScalePerTenant int
	Nodes          int // nodes of a deployed workspace
	Deploys        int // measured deploys, ours and Node-RED's
	References     int // references to the entry the DELETE scenario tries to delete
	Exports        int // measured exports
	NodeRED        bool
	ResultsDir     string
	Root           string
	Profile        bool
	Only           []string // scenario names to run (-only); all when empty
}

func defaults(quick bool) settings {
	s := settings{
		Quick: quick, Concurrency: 8, Warmup: 2 * time.Second, Duration: 20 * time.Second,
		Entries: 10_000, ScaleTenants: 1_000, ScalePerTenant: 1_000,
		Nodes: 2_000, Deploys: 15, References: 100_000, Exports: 10, NodeRED: true, Profile: true,
	}
	if quick {
		s.Warmup, s.Duration = 500*time.Millisecond, 3*time.Second
		s.ScaleTenants, s.Deploys, s.Exports = 100, 5, 3
		s.Profile = false
	}
	return s
}

func main() {
	quick := os.Getenv("BENCH_QUICK") != "" && os.Getenv("BENCH_QUICK") != "0"
	s := defaults(quick)
	flag.BoolVar(&s.Quick, "quick", s.Quick, "the one-minute smoke version (also BENCH_QUICK=1)")
	flag.DurationVar(&s.Duration, "duration", s.Duration, "measured time of each load scenario and baseline")
	flag.BoolVar(&s.NodeRED, "nodered", s.NodeRED, "run the Node-RED peer (needs npm and the registry)")
	flag.BoolVar(&s.Profile, "profile", s.Profile, "CPU-profile the in-process equivalent of every target not met")
	flag.StringVar(&s.ResultsDir, "results", "", "where the JSON goes (default <module>/bench/results)")
	only := flag.String("only", "", "run only these scenarios, comma-separated names as the progress lines print them (e.g. scale)")
	flag.Parse()
	if s.Quick && !quick {
		d := s.Duration
		s = defaults(true)
		if d != defaults(false).Duration {
			s.Duration = d
		}
	}

	if *only != "" {
		s.Only = strings.Split(*only, ",")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(ctx, s, os.Stdout, logger); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// moduleRoot is the directory of go.mod, so the bench runs from anywhere in the tree.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the certstore module")
	}
	return filepath.Dir(mod), nil
}

// run is the whole bench. Everything it starts is stopped by the cleanups it registers,
// which run on return whatever the outcome, Ctrl-C included (ctx ends, every step
// returns). The server and PostgreSQL also die with this process if it is killed.
func run(ctx context.Context, s settings, out io.Writer, logger *slog.Logger) (err error) {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	s.Root = root
	if s.ResultsDir == "" {
		s.ResultsDir = filepath.Join(root, "bench", "results")
	}
	b := &bench{s: s, out: out, log: logger, report: &Report{
		StartedAt: time.Now(), Quick: s.Quick, Concurrency: s.Concurrency, Duration: s.Duration.String(),
		Machine: machineFacts(),
	}}
	defer func() {
		if cerr := b.cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	b.progress("machine: %d CPUs, %s, %s; load average at start %s", runtime.NumCPU(),
		b.report.Machine["memory"], runtime.Version(), b.report.Machine["loadavg_at_start"])
	if err := b.setup(ctx); err != nil {
		return err
	}
	b.runAll(ctx)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return b.finish()
}

// machineFacts describes the machine the figures come from.
func machineFacts() map[string]string {
	f := map[string]string{
		"nproc":      fmt.Sprint(runtime.NumCPU()),
		"go_version": runtime.Version(),
		"goos/arch":  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(rest), &kb)
				f["memory"] = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "model name"); ok {
				f["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		f["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f["loadavg_at_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return f
}
