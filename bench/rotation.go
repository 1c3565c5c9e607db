package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/keyrotation"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/tenantkey"
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
	if err != nil {
		return err
	}
	if err := b.filesCurrent(ctx, tenants); err != nil {
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
	var export time.Duration
	written := 0
	for _, f := range rep.Files {
		export += f.Duration
		if f.Written {
			written++
		}
	}
	// Migrate's scan for rows under an older key is the first thing Rotate does; it is
	// timed again alone, after the rotation, to tell it from the rewrap of the tenant keys.
	t1 := time.Now()
	moved, err := rot.Migrate(ctx)
	migrate := time.Since(t1)
	if err != nil {
		return fmt.Errorf("time the migration's scan: %w", err)
	}
	if moved != 0 || rep.Rewrapped != 0 {
		return fmt.Errorf("the rotation moved %d row(s) and the scan after it %d: the seeded rows are not under their tenant keys", rep.Rewrapped, moved)
	}
	const settle = time.Second // the Rotator's default, waited once when no server wraps under the old key
	rewrap := total - export - settle - migrate

	r := Row{Scenario: name, P99: Millis(total), Target: "rotation < " + fmtDur(rotationCeiling)}
	r.Status = judge(total < rotationCeiling && rep.TenantKeys >= nt)
	r.Baseline = fmt.Sprintf("O(rows) path %s", fmtDur(base.extrapolated))
	r.Note = fmt.Sprintf("one rotation per run, its time in the p99 column; %d tenant keys rewrapped, %d of %d files written: "+
		"re-export %s (%s a file), settle %s, migration scan %s (timed alone after), tenant keys rewrapped and the rest %s; "+
		"baseline: RotateTenant of %d tenants (settle %s) took %s each, %d rows and one file each, x %d tenants, %.0f x this rotation",
		rep.TenantKeys, written, len(rep.Files), fmtDur(export), fmtDur(export/time.Duration(max(1, len(rep.Files)))),
		fmtDur(settle), fmtDur(migrate), fmtDur(rewrap),
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
