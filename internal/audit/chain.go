package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
)

// A write stores its audit record in its own transaction, in audit_pending, which no
// other writer waits for; chaining numbers and links the pending records of a tenant
// into audit_log, in one transaction under the lock of the tenant's head. Every read of
// the trail (List, Export, VerifyTenant) chains first, so it shows every committed
// write; a Chainer keeps the chain caught up between reads, and checkpoints it.

// Chain moves the tenant's pending records into its chain and returns how many it moved.
// Each is linked under the tenant's current audit key (keys.Current): its hash is
// MAC(key, ...) and it records the key's version. With nil keys it is linked by plain
// SHA-256 (Hash), as earlier releases did, unless the trail is keyed already: then it
// fails with ErrNoKeys and the records stay pending. It is cheap when nothing is pending:
// one round trip, reading an index.
func Chain(ctx context.Context, pool *pgxpool.Pool, keys Keys, tenant string) (int, error) {
	has, err := repo.HasPendingAudit(ctx, pool, tenant)
	if err != nil || !has {
		return 0, chainErr(tenant, err)
	}
	// The key is fetched before the head is locked: other chainers of the tenant do not
	// wait on the key source.
	key, version, err := currentKey(ctx, keys, tenant)
	if err != nil {
		return 0, chainErr(tenant, err)
	}
	n, err := db.InTenantV(ctx, pool, tenant, func(tx pgx.Tx) (int, error) {
		return repo.ChainPendingAudit(ctx, tx, tenant, func(prev repo.AuditLink, r *repo.AuditRecord) error {
			if key == nil && prev.KeyVersion > 0 {
				return fmt.Errorf("record %d would follow record %d, chained under audit key version %d: %w",
					r.Seq, prev.Seq, prev.KeyVersion, ErrNoKeys)
			}
			r.KeyVersion = version
			r.Hash = chainHash(key, r.PrevHash, r.Seq, Canonical(r))
			return nil
		})
	})
	return n, chainErr(tenant, err)
}

func chainErr(tenant string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("chain audit records of %s: %w", tenant, err)
}

// Chainer chains the tenants it is told of, in the background, coalescing: many writes
// of one tenant told of while a chaining runs are chained by the next one, together.
// With a CheckpointDir it also checkpoints each tenant's head there after chaining, at
// most once per CheckpointEvery per tenant, and once more when it stops.
type Chainer struct {
	Pool *pgxpool.Pool
	// Keys gives the tenants' audit keys; nil chains by plain SHA-256 (see Chain).
	Keys Keys
	// CheckpointDir, when set, is where the tenants' heads are checkpointed
	// (CheckpointDir of the data directory).
	CheckpointDir string
	// CheckpointEvery is the least time between two checkpoints of one tenant; zero
	// means 1 s. A burst of writes costs one checkpoint, not one per write.
	CheckpointEvery time.Duration
	Logger          *slog.Logger
	// Retry is how long a tenant waits after a failed chaining; zero means 5 s.
	Retry time.Duration

	mu      sync.Mutex
	pending map[string]bool
	wake    chan struct{}
}

// Kick says that tenant has records to chain (a write of it committed). It never blocks.
func (c *Chainer) Kick(tenant string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.pending == nil {
		c.pending = map[string]bool{}
	}
	c.pending[tenant] = true
	w := c.wakeLocked()
	c.mu.Unlock()
	select {
	case w <- struct{}{}:
	default:
	}
}

func (c *Chainer) wakeLocked() chan struct{} {
	if c.wake == nil {
		c.wake = make(chan struct{}, 1)
	}
	return c.wake
}

// stopGrace bounds the last chaining and checkpoints of a Chainer that is stopping.
const stopGrace = 10 * time.Second

// Run chains what it is told of until ctx ends. It first chains every tenant's records
// left pending by a process that stopped between a write and its chaining (and so
// checkpoints every tenant's head). When ctx ends it chains what it was told of since its
// last pass and writes the checkpoints still due, within a few seconds, then returns.
func (c *Chainer) Run(ctx context.Context) {
	if tenants, err := repo.ListTenants(ctx, c.Pool); err == nil {
		for _, t := range tenants {
			c.Kick(t.ID)
		}
	} else if ctx.Err() == nil {
		c.logger().Error("audit chainer: list tenants", "err", err)
	}
	c.mu.Lock()
	wake := c.wakeLocked()
	c.mu.Unlock()
	cps := &checkpoints{c: c, due: map[string]time.Time{}, written: map[string]time.Time{}}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
			c.chainKicked(last, cps)
			cps.write(last, true)
			cancel()
			return
		case <-wake:
		case <-timer.C:
		}
		c.chainKicked(ctx, cps)
		if wait, ok := cps.write(ctx, false); ok {
			timer.Reset(wait)
		}
	}
}

// chainKicked chains every tenant told of since the last pass. A tenant that fails is
// told of again after Retry; those not reached before ctx ends stay told of.
func (c *Chainer) chainKicked(ctx context.Context, cps *checkpoints) {
	c.mu.Lock()
	batch := c.pending
	c.pending = nil
	c.mu.Unlock()
	retry := c.retry()
	for tenant := range batch {
		if ctx.Err() != nil {
			c.Kick(tenant)
			continue
		}
		if _, err := Chain(ctx, c.Pool, c.Keys, tenant); err != nil {
			if ctx.Err() != nil {
				c.Kick(tenant)
				continue
			}
			c.logger().Error("audit chainer: retrying", "tenant", tenant, "err", err)
			time.AfterFunc(retry, func() { c.Kick(tenant) })
			continue
		}
		cps.mark(tenant)
	}
}

// WriteCheckpoint checkpoints tenant's head in CheckpointDir now and returns the
// checkpoint the file holds after. The checkpoint only moves forward along the trail it
// checkpointed: when the trail no longer holds the file's record with its hash, or ends
// before it, the file is kept (it is the evidence) and the error is a *BrokenLinkError
// naming that record.
func (c *Chainer) WriteCheckpoint(ctx context.Context, tenant string) (Checkpoint, error) {
	if c.CheckpointDir == "" {
		return Checkpoint{}, fmt.Errorf("checkpoint audit trail of %s: the chainer has no checkpoint directory", tenant)
	}
	return advanceCheckpoint(ctx, c.Pool, c.CheckpointDir, tenant)
}

// checkpoints is the Chainer's schedule of checkpoint writes, owned by Run's goroutine.
type checkpoints struct {
	c *Chainer
	// due holds the tenants chained since their last checkpoint, with the earliest time
	// their next one may be written.
	due map[string]time.Time
	// written is when each tenant's checkpoint was last written (or tried).
	written map[string]time.Time
}

func (p *checkpoints) every() time.Duration {
	if p.c.CheckpointEvery > 0 {
		return p.c.CheckpointEvery
	}
	return time.Second
}

// mark says tenant was chained: its checkpoint is due once CheckpointEvery has passed
// since its last.
func (p *checkpoints) mark(tenant string) {
	if p.c.CheckpointDir == "" {
		return
	}
	if _, ok := p.due[tenant]; !ok {
		p.due[tenant] = p.written[tenant].Add(p.every())
	}
}

// write writes the checkpoints that are due (all of them when all is set) and returns
// how long until the next one is, if one is left.
func (p *checkpoints) write(ctx context.Context, all bool) (wait time.Duration, left bool) {
	now := time.Now()
	var ready []string
	for tenant, at := range p.due {
		if all || !at.After(now) {
			ready = append(ready, tenant)
		}
	}
	for _, tenant := range ready {
		if ctx.Err() != nil {
			break
		}
		delete(p.due, tenant)
		p.written[tenant] = now
		_, err := p.c.WriteCheckpoint(ctx, tenant)
		var broken *BrokenLinkError
		switch {
		case errors.As(err, &broken):
			// Chaining goes on (the trail stays usable); the checkpoint stays where it
			// was, and audit verify reports the same link.
			p.c.logger().Error("audit trail does not match its checkpoint; run loopze-certs audit verify",
				"tenant", tenant, "err", err)
		case err != nil && ctx.Err() == nil:
			p.c.logger().Error("audit chainer: checkpoint, retrying", "tenant", tenant, "err", err)
			p.due[tenant] = now.Add(p.c.retry())
		}
	}
	var next time.Time
	for _, at := range p.due {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if next.IsZero() {
		return 0, false
	}
	return max(time.Until(next), 0), true
}

func (c *Chainer) retry() time.Duration {
	if c.Retry > 0 {
		return c.Retry
	}
	return 5 * time.Second
}

func (c *Chainer) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}
