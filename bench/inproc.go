package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/resolver"
)

// resolver is a TLS resolver over the run's database and master key, as the server has:
// its entries come from a catalogue with the read cache, kept by its own export loop.
func (b *bench) resolver(ctx context.Context) (*resolver.Resolver, func(), error) {
	rep, err := b.newReplica(ctx)
	if err != nil {
		return nil, nil, err
	}
	return &resolver.Resolver{Entries: rep.svc.Entries(), Logger: b.log}, rep.stop, nil
}

// buildTLSOp resolves a tls block referencing a random stored inline client pair.
func (b *bench) buildTLSOp(r *resolver.Resolver) Op {
	return func(ctx context.Context, _ int, rnd *rand.Rand) error {
		block := &refs.TLS{ClientCert: refs.PartSpec{Ref: b.ids[rnd.IntN(len(b.ids))]}}
		cfg, err := r.BuildTLSConfig(ctx, tenantMain, block)
		if err != nil {
			return err
		}
		if cfg.GetClientCertificate == nil {
			return errors.New("BuildTLSConfig: no client certificate in the config")
		}
		return nil
	}
}

// scenarioBuildTLS: BuildTLSConfig of a block referencing a stored inline client pair, in
// process, as the server resolves it: the entry from the read cache (a row read in the
// tenant when it changed), the material parsed once per version.
func (b *bench) scenarioBuildTLS(ctx context.Context) error {
	rs, stop, err := b.resolver(ctx)
	if err != nil {
		return err
	}
	defer stop()
	// A runtime resolves the same nodes again and again: the steady state is measured,
	// after every entry was resolved once (read from the database and parsed).
	for _, id := range b.ids {
		if _, err := rs.BuildTLSConfig(ctx, tenantMain, &refs.TLS{ClientCert: refs.PartSpec{Ref: id}}); err != nil {
			return fmt.Errorf("warm the resolver: %w", err)
		}
	}
	res := runLoad(ctx, b.s.Concurrency, b.s.Warmup, b.s.Duration, b.buildTLSOp(rs))
	r := ratioRow(loadRow("BuildTLSConfig, inline client-pair ref (in process)", res), "raw pgx by PK", b.pgxTPS, 0.5)
	p99 := res.Hist.Quantile(0.99)
	r.Target = "p99 < 100µs and " + r.Target
	if r.Status == statusMet && p99 >= 100*time.Microsecond {
		r.Status = statusNotMet
	}
	r.Note = joinNote(r.Note, fmt.Sprintf("every one of the %d entries resolved once before the measurement", len(b.ids)))
	b.add(r)
	b.profile(ctx, r, "buildtls", b.s.Concurrency, b.buildTLSOp(rs))
	return nil
}

// exportOp exports the main tenant, forced, into dir.
func (b *bench) exportOp(dir string) (Op, *fileexport.Result) {
	x := &fileexport.Exporter{Pool: b.pool, Keys: b.keys, DataDir: dir, Logger: b.log}
	last := &fileexport.Result{}
	return func(ctx context.Context, _ int, _ *rand.Rand) error {
		res, err := x.ExportTenant(ctx, tenantMain, true)
		*last = res
		return err
	}, last
}

// scenarioExport: a forced export of the main tenant (every entry opened and sealed into
// one file, written atomically), in process, one at a time; and once through the binary's
// export subcommand, process start included.
func (b *bench) scenarioExport(ctx context.Context) error {
	dir := filepath.Join(b.tmp, "export")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create export dir: %w", err)
	}
	op, last := b.exportOp(dir)
	res := runSequence(ctx, 1, b.s.Exports, op)
	r := loadRow(fmt.Sprintf("export of a %dk-entry tenant (in process)", b.s.Entries/1000), res)
	worst := res.Hist.Max()
	r = underRow(r, "every run", worst, time.Second)
	r.Note = joinNote(r.Note, fmt.Sprintf("%d forced exports, slowest %s, %d entries", res.Ops, fmtDur(worst), last.Entries))
	t0 := time.Now()
	if _, err := b.srv.run(ctx, "export", "--tenant", tenantMain); err != nil {
		r.Note = joinNote(r.Note, "export subcommand: "+err.Error())
	} else {
		r.Note = joinNote(r.Note, fmt.Sprintf("`loopze-certs export --tenant %s` took %s with process start", tenantMain, fmtDur(time.Since(t0))))
	}
	b.add(r)
	op, _ = b.exportOp(dir)
	b.profile(ctx, r, "export", 1, op)
	return nil
}
