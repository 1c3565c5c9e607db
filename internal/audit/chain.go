package audit

import (
	"context"
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
// other writer waits for; chaining numbers and hashes the pending records of a tenant
// into audit_log, in one transaction under the lock of the tenant's head. Every read of
// the trail (List, Export, VerifyTenant) chains first, so it shows every committed
// write; a Chainer keeps the chain caught up between reads.

// Chain moves the tenant's pending records into its chain and returns how many it moved.
// It is cheap when nothing is pending: one round trip, reading an index.
func Chain(ctx context.Context, pool *pgxpool.Pool, tenant string) (int, error) {
	has, err := repo.HasPendingAudit(ctx, pool, tenant)
	if err != nil || !has {
		return 0, chainErr(tenant, err)
	}
	n, err := db.InTenantV(ctx, pool, tenant, func(tx pgx.Tx) (int, error) {
		return repo.ChainPendingAudit(ctx, tx, tenant, func(prev []byte, seq int64, r *repo.AuditRecord) []byte {
			return Hash(prev, seq, Canonical(r))
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
type Chainer struct {
	Pool   *pgxpool.Pool
	Logger *slog.Logger
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

// Run chains what it is told of until ctx ends. It first chains every tenant's records
// left pending by a process that stopped between a write and its chaining.
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
	retry := c.Retry
	if retry <= 0 {
		retry = 5 * time.Second
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		}
		c.mu.Lock()
		batch := c.pending
		c.pending = nil
		c.mu.Unlock()
		for tenant := range batch {
			if _, err := Chain(ctx, c.Pool, tenant); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.logger().Error("audit chainer: retrying", "tenant", tenant, "err", err)
				time.AfterFunc(retry, func() { c.Kick(tenant) })
			}
		}
	}
}

func (c *Chainer) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}
