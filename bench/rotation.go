package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/keyrotation"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/tenantkey"
	"golang.org/x/sync/errgroup"
)

// rotationCeiling is the master key rotation's target over the scale scenario's tenants.
const rotationCeiling = 5 * time.Second

// rotationBaselineTenants is how many tenants' keys the baseline rotates, one at a time.
const rotationBaselineTenants = 3

// rotationSettle is the baseline's settle: see rotationBaseline.
const rotationSettle = time.Millisecond

// operatorCtx carries the actor rotate-key records in the audit trail.
func operatorCtx(ctx context.Context) context.Context {
	return audit.WithActor(ctx, audit.Actor{Subject: "loopze-certs rotate-key", Role: "operator"})
}

// scenarioRotation: a master key rotation (keyrotation.Rotator.Rotate, in process, the
// master key a file in the server's data directory) over the scale scenario's tenants,
// whose files are current when it starts, while the server runs and hears its
// announcements. Its baseline, measured in the same run, is the O(rows) path a master
// rotation took before tenant keys: every row rewrapped and every file re-exported, which
// is what a tenant key rotation (RotateTenant) does to one tenant; a few are timed and the
// per-tenant cost is multiplied by the number of tenants.
func (b *bench) scenarioRotation(ctx context.Context) error {
	nt, per := b.s.ScaleTenants, b.s.ScalePerTenant
	tenants, err := b.seedScale(ctx)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("master key rotation, %d tenants x %d entries", nt, per)
	ctx = operatorCtx(ctx)

	base, err := b.rotationBaseline(ctx, tenants)
	// The bench's own keys learn of the baseline's new tenant key versions as a server
	// does when it hears of them.
	if rerr := b.keys.Reload(); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	if err := b.filesCurrent(ctx, tenants); err != nil {
		return err
	}

	floor, err := b.rewriteFloor(ctx)
	if err != nil {
		return err
	}

	keys, closeKeys, err := b.rotateKeys()
	if err != nil {
		return err
	}
	defer closeKeys()
	rot := &keyrotation.Rotator{Pool: b.pool, DataDir: b.srv.dataDir, Keys: keys, Logger: b.log}
	t0 := time.Now()
	rep, err := rot.Rotate(ctx)
	total := time.Since(t0)
	// The bench's own keys (the seeder's, the in-process replicas') follow the rotation as a
	// server does when it hears of it.
	if rerr := b.keys.Reload(); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("rotate the master key: %w", err)
	}
	written, resealed := 0, 0
	for _, f := range rep.Files {
		if f.Written {
			written++
		}
		if f.Resealed {
			resealed++
		}
	}
	if rep.Rewrapped != 0 {
		return fmt.Errorf("the rotation moved %d row(s): the seeded rows are not under their tenant keys", rep.Rewrapped)
	}
	took := rep.Took
	rest := total - took.Migrate - took.TenantKeys - took.Export - took.Settle

	r := Row{Scenario: name, P99: Millis(total), Target: "rotation < " + fmtDur(rotationCeiling)}
	r.Status = judge(total < rotationCeiling && rep.TenantKeys >= nt)
	r.Baseline = fmt.Sprintf("O(rows) path %s", fmtDur(base.extrapolated))
	r.Note = fmt.Sprintf("one rotation per run, its time in the p99 column; %d tenant keys rewrapped, %d files: "+
		"re-export %s (%d written by the rotation, %d of them resealed; the server wrote the others), "+
		"tenant keys rewrapped and counted %s, search for rows to move %s, settle beyond the re-export %s, the rest %s; "+
		"the files hold %.2f GB, and writing the same bytes again through the same durable write, %d at once, took %s; "+
		"baseline: RotateTenant of %d tenants (settle %s) took %s each, %d rows and one file each, x %d tenants, %.0f x this rotation",
		rep.TenantKeys, len(rep.Files), fmtDur(took.Export), written, resealed,
		fmtDur(took.TenantKeys), fmtDur(took.Migrate), fmtDur(took.Settle), fmtDur(rest),
		float64(floor.bytes)/1e9, fileexport.AllAtOnce(), fmtDur(floor.took),
		rotationBaselineTenants, fmtDur(rotationSettle), fmtDur(base.perTenant), base.rows/rotationBaselineTenants, nt,
		float64(base.extrapolated)/float64(total))
	b.add(r)
	return nil
}

// rotationBase is the baseline's figures.
type rotationBase struct {
	perTenant, extrapolated time.Duration
	rows                    int64
}

// rotationBaseline rotates the keys of a few tenants (other ones in every run), each
// rewrapping the data keys of its rows and re-exporting its file, and extrapolates to every
// tenant. The settle after each is cut to a millisecond: an O(rows) master rotation waits
// once for servers that have not reloaded, not once per tenant.
func (b *bench) rotationBaseline(ctx context.Context, tenants []string) (rotationBase, error) {
	keys, closeKeys, err := b.rotateKeys()
	if err != nil {
		return rotationBase{}, err
	}
	defer closeKeys()
	rot := &keyrotation.Rotator{Pool: b.pool, DataDir: b.srv.dataDir, Keys: keys, Logger: b.log, Settle: rotationSettle}
	var base rotationBase
	var took time.Duration
	for i := range rotationBaselineTenants {
		tenant := tenants[len(tenants)-1-(b.run-1)*rotationBaselineTenants-i]
		t0 := time.Now()
		rep, err := rot.RotateTenant(ctx, tenant)
		took += time.Since(t0)
		if err != nil {
			return base, fmt.Errorf("baseline: rotate the key of %s: %w", tenant, err)
		}
		base.rows += rep.Rewrapped
	}
	base.perTenant = took / rotationBaselineTenants
	base.extrapolated = base.perTenant * time.Duration(len(tenants))
	return base, nil
}

// rewrite is what writing every tenant's file again byte for byte cost.
type rewrite struct {
	bytes int64
	took  time.Duration
}

// rewriteFloor writes a copy of every tenant's file into a scratch directory through the
// export's durable write (temp file, fsync, rename, fsync of the directory), as many at
// once as the export writes them: the disk's and the copy's share of any re-export of
// files this size, which the rotation cannot go below while it rewrites every file.
func (b *bench) rewriteFloor(ctx context.Context) (rewrite, error) {
	tenants, err := repo.ListTenants(ctx, b.pool)
	if err != nil {
		return rewrite{}, err
	}
	scratch := filepath.Join(b.tmp, "rewrite")
	defer os.RemoveAll(scratch)
	var (
		total atomic.Int64
		errs  = make([]error, len(tenants))
		g     errgroup.Group
	)
	g.SetLimit(fileexport.AllAtOnce())
	t0 := time.Now()
	for i, tn := range tenants {
		g.Go(func() error {
			data, err := os.ReadFile(credfile.Path(b.srv.dataDir, tn.ID))
			if err == nil {
				err = fileexport.WriteAtomic(credfile.Path(scratch, tn.ID), data)
			}
			errs[i] = err
			total.Add(int64(len(data)))
			return nil
		})
	}
	_ = g.Wait() // every error is in errs
	return rewrite{bytes: total.Load(), took: time.Since(t0)}, errors.Join(errs...)
}

// rotateKeys opens the keys as `loopze-certs rotate-key` does in a process of its own,
// the master key a file in the data directory: the master keyring, and loopze.key as the
// ring of keys rows were sealed under before tenant keys. Nothing of them is cached yet.
func (b *bench) rotateKeys() (*tenantkey.Keys, func() error, error) {
	master, err := masterkey.Open("", b.srv.dataDir, os.Getenv, b.log)
	if err != nil {
		return nil, nil, fmt.Errorf("open the master key to rotate it: %w", err)
	}
	legacy, err := envelope.LoadExisting(b.srv.dataDir, b.log)
	if err != nil {
		_ = master.Close()
		return nil, nil, fmt.Errorf("open the master key files to rotate them: %w", err)
	}
	return &tenantkey.Keys{Pool: b.pool, Master: master, Legacy: legacy, Logger: b.log}, master.Close, nil
}

// filesCurrent checks that every tenant's file is at the database's generation and under
// its current keys, as an export finds it before the rotation: the rotation's re-export is
// then measured as it runs in production, every file existing and current.
func (b *bench) filesCurrent(ctx context.Context, tenants []string) error {
	x := &fileexport.Exporter{Pool: b.pool, Keys: b.keys, DataDir: b.srv.dataDir, Logger: b.log}
	for _, t := range tenants {
		res, err := x.ExportTenant(ctx, t, false)
		if err != nil {
			return fmt.Errorf("check the file of %s: %w", t, err)
		}
		if res.Written {
			return fmt.Errorf("the file of %s (%s) was not current before the rotation", t, credfile.Path(b.srv.dataDir, t))
		}
	}
	return nil
}
