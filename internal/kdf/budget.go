// Package kdf owns the server-wide budget of password-based key derivation (PBKDF2, scrypt,
// the PKCS#12 MAC and PBE). A derivation is the one thing a request can make the server do
// that costs seconds of CPU and tens of MiB per call while the caller sends a few hundred
// bytes, so every derivation the server runs for a tenant is first admitted here: a CPU
// slot and its memory, out of a fixed total, with a short queue behind, a cap per tenant
// so that one tenant never holds all of it, and ErrBusy at once when the queue is full.
//
// It knows nothing of what is derived: internal/material computes the cost of each
// derivation and asks. The runtime side (nodetls) runs without a budget.
package kdf

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"time"
)

// ErrBusy means the budget is full: every slot is taken and the queue (or the tenant's
// share of it) is full. Nothing was derived; the caller may try again (BusyError says
// when).
var ErrBusy = errors.New("key derivation is busy")

// BusyError is ErrBusy with the time after which a retry is likely to be admitted.
type BusyError struct {
	// RetryAfter is at least a second.
	RetryAfter time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%s: retry after %s", ErrBusy.Error(), e.RetryAfter)
}

// Unwrap makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Unwrap() error { return ErrBusy }

// Defaults of Config. The memory fits the serve default GOMEMLIMIT=128MiB beside the rest
// of the heap: one scrypt derivation at the largest parameters internal/material accepts
// (32 MiB) and the smaller ones of another tenant run at once.
const (
	DefaultMemory = 64 << 20
	// DefaultQueue is short: a waiter's wait is bounded by the queue ahead of it times the
	// longest derivation (about a second), well inside any client's timeout.
	DefaultQueue = 8
)

// DefaultSlots is the number of derivations that run at once: one per processor the Go
// runtime uses, since each derivation keeps one busy.
func DefaultSlots() int { return runtime.GOMAXPROCS(0) }

// Config sizes a Budget. Zero fields take the defaults.
type Config struct {
	// Memory is the total memory, in bytes, the derivations admitted at once may need.
	Memory int64
	// Slots is how many derivations run at once.
	Slots int
	// Queue is how many callers may wait for a slot; past it, ErrBusy.
	Queue int
}

func (c Config) withDefaults() Config {
	if c.Memory <= 0 {
		c.Memory = DefaultMemory
	}
	if c.Slots <= 0 {
		c.Slots = DefaultSlots()
	}
	if c.Queue <= 0 {
		c.Queue = DefaultQueue
	}
	return c
}

// Budget admits key derivations. Its zero value is not usable: build one with New. A nil
// *Budget admits everything at once, for callers that run without one.
//
// Fairness: a tenant holds at most half the slots and half the memory (at least one slot,
// and any one derivation when it holds nothing) and waits in at most half the queue, so
// another tenant always finds a slot or a place. Waiters are admitted in arrival order,
// skipping those whose tenant is at its share; a waiter that does not fit the free
// memory stops the ones behind it, so small derivations cannot starve a large one.
type Budget struct {
	cfg Config
	// Per-tenant shares, derived from cfg.
	tenantSlots, tenantQueue int
	tenantMemory             int64

	mu      sync.Mutex
	slots   int   // in use
	memory  int64 // in use
	queue   []*waiter
	tenants map[string]*share
	// hold is a moving average of how long an admission is held, for Retry-After; it
	// starts at initialHold.
	hold time.Duration
}

// initialHold is what an admission is assumed to last before any was given back: about
// what the longest derivation accepted takes on one core.
const initialHold = time.Second

// share is what one tenant holds and how many of its callers wait.
type share struct {
	slots   int
	memory  int64
	waiting int
}

type waiter struct {
	tenant   string
	memory   int64
	ready    chan struct{} // closed when admitted
	admitted bool
}

// New returns a budget sized by c.
func New(c Config) *Budget {
	c = c.withDefaults()
	return &Budget{
		cfg:          c,
		tenantSlots:  max(1, c.Slots/2),
		tenantQueue:  max(1, c.Queue/2),
		tenantMemory: c.Memory / 2,
		tenants:      map[string]*share{},
		hold:         initialHold,
	}
}

// Config returns the budget's sizes, defaults applied.
func (b *Budget) Config() Config { return b.cfg }

// Acquire waits until tenant may run one derivation needing memory bytes, and returns the
// function that gives the slot and the memory back (call it once, when the derivation
// returns). It fails at once with a *BusyError (errors.Is ErrBusy) when the derivation
// cannot start now and the queue has no place for the caller, and with ctx's error when
// ctx ends first: a caller whose client went away leaves the queue. Memory beyond the
// whole budget is counted as the whole budget, so such a derivation runs alone.
func (b *Budget) Acquire(ctx context.Context, tenant string, memory int64) (release func(), err error) {
	if b == nil {
		return func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wait for a key derivation slot: %w", err)
	}
	memory = min(max(memory, 0), b.cfg.Memory)
	b.mu.Lock()
	sh := b.share(tenant)
	if b.fits(sh, memory) && !b.waitingAhead() {
		b.take(sh, memory)
		b.mu.Unlock()
		return b.releaser(tenant, memory), nil
	}
	if len(b.queue) >= b.cfg.Queue || sh.waiting >= b.tenantQueue {
		retry := b.retryAfter()
		b.forget(tenant, sh)
		b.mu.Unlock()
		return nil, &BusyError{RetryAfter: retry}
	}
	w := &waiter{tenant: tenant, memory: memory, ready: make(chan struct{})}
	b.queue = append(b.queue, w)
	sh.waiting++
	// Someone ahead may be waiting for memory this caller does not need; the scan
	// decides in order.
	b.admit()
	b.mu.Unlock()

	select {
	case <-w.ready:
		return b.releaser(tenant, memory), nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	if w.admitted {
		// Admitted as ctx ended: give it straight back.
		b.put(tenant, memory)
		b.admit()
		b.mu.Unlock()
		return nil, fmt.Errorf("wait for a key derivation slot: %w", ctx.Err())
	}
	for i, q := range b.queue {
		if q == w {
			b.queue = append(b.queue[:i], b.queue[i+1:]...)
			break
		}
	}
	sh.waiting--
	b.forget(tenant, sh)
	// The caller that left may have been the one holding the others back.
	b.admit()
	b.mu.Unlock()
	return nil, fmt.Errorf("wait for a key derivation slot: %w", ctx.Err())
}

// Stats is a snapshot of a budget's use.
type Stats struct {
	// Running is the number of derivations admitted and not yet released.
	Running int
	// Memory is the memory they were admitted with, in bytes.
	Memory int64
	// Queued is the number of callers waiting.
	Queued int
}

// Stats returns what the budget holds now.
func (b *Budget) Stats() Stats {
	if b == nil {
		return Stats{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Running: b.slots, Memory: b.memory, Queued: len(b.queue)}
}

// share returns tenant's share, created empty. Callers hold mu.
func (b *Budget) share(tenant string) *share {
	sh := b.tenants[tenant]
	if sh == nil {
		sh = &share{}
		b.tenants[tenant] = sh
	}
	return sh
}

// forget drops an empty share, so the map holds only tenants with something in flight.
func (b *Budget) forget(tenant string, sh *share) {
	if sh.slots == 0 && sh.waiting == 0 {
		delete(b.tenants, tenant)
	}
}

// fits reports whether a derivation of memory bytes may start now for the tenant of sh,
// leaving the queue aside. Callers hold mu.
func (b *Budget) fits(sh *share, memory int64) bool {
	return b.slots < b.cfg.Slots && b.memory+memory <= b.cfg.Memory && b.withinShare(sh, memory)
}

// waitingAhead reports whether a waiter is held back by the free slots or memory rather
// than by its tenant's share: a newcomer must not overtake it. Callers hold mu.
func (b *Budget) waitingAhead() bool {
	for _, w := range b.queue {
		if b.withinShare(b.tenants[w.tenant], w.memory) {
			return true
		}
	}
	return false
}

// withinShare reports whether the tenant of sh may take one more derivation of memory
// bytes: under its share of the slots, and of the memory unless it holds nothing (so a
// derivation larger than a share still runs, alone for its tenant).
func (b *Budget) withinShare(sh *share, memory int64) bool {
	if sh.slots >= b.tenantSlots {
		return false
	}
	return sh.slots == 0 || sh.memory+memory <= b.tenantMemory
}

func (b *Budget) take(sh *share, memory int64) {
	b.slots++
	b.memory += memory
	sh.slots++
	sh.memory += memory
}

// put gives back one admission of tenant. Callers hold mu.
func (b *Budget) put(tenant string, memory int64) {
	b.slots--
	b.memory -= memory
	sh := b.tenants[tenant]
	sh.slots--
	sh.memory -= memory
	b.forget(tenant, sh)
}

// admit starts every waiter that may start, in order: a waiter whose tenant is at its
// share is passed over (another tenant's waiter behind it goes first); one that does not
// fit the free slots or memory stops the scan. Callers hold mu.
func (b *Budget) admit() {
	for i := 0; i < len(b.queue); {
		w := b.queue[i]
		sh := b.tenants[w.tenant]
		if !b.withinShare(sh, w.memory) {
			i++
			continue
		}
		if b.slots >= b.cfg.Slots || b.memory+w.memory > b.cfg.Memory {
			return
		}
		b.queue = append(b.queue[:i], b.queue[i+1:]...)
		sh.waiting--
		b.take(sh, w.memory)
		w.admitted = true
		close(w.ready)
	}
}

// releaser returns the release function of one admission; it records how long the
// admission was held and is safe to call more than once.
func (b *Budget) releaser(tenant string, memory int64) func() {
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			held := time.Since(start)
			b.mu.Lock()
			defer b.mu.Unlock()
			b.put(tenant, memory)
			b.hold += (held - b.hold) / 8
			b.admit()
		})
	}
}

// maxRetryAfter bounds the Retry-After a BusyError suggests.
const maxRetryAfter = time.Minute

// retryAfter estimates when a caller refused now would find a place: the queue ahead of
// it drained through the slots at the recent pace, rounded up to whole seconds. Callers
// hold mu.
func (b *Budget) retryAfter() time.Duration {
	ahead := float64(len(b.queue)+1) / float64(b.cfg.Slots)
	secs := math.Ceil(ahead * b.hold.Seconds())
	return time.Duration(min(max(secs, 1), maxRetryAfter.Seconds())) * time.Second
}
