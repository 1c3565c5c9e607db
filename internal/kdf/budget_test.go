package kdf_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/kdf"
)

const mib = 1 << 20

// waitFor polls cond until it holds; the deadline only turns a hang into a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// acquireAsync starts an Acquire and returns the channel its outcome arrives on.
func acquireAsync(ctx context.Context, b *kdf.Budget, tenant string, memory int64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		release, err := b.Acquire(ctx, tenant, memory)
		ch <- result{release, err}
	}()
	return ch
}

type result struct {
	release func()
	err     error
}

func mustAcquire(t *testing.T, b *kdf.Budget, tenant string, memory int64) func() {
	t.Helper()
	release, err := b.Acquire(context.Background(), tenant, memory)
	require.NoError(t, err)
	return release
}

// TestQueueFullIsBusy: with every slot taken and the queue full, a caller is refused at
// once with ErrBusy and a Retry-After of at least a second, and holds nothing.
func TestQueueFullIsBusy(t *testing.T) {
	t.Parallel()
	b := kdf.New(kdf.Config{Memory: 64 * mib, Slots: 2, Queue: 2})
	relA := mustAcquire(t, b, "a", mib)
	relB := mustAcquire(t, b, "b", mib)
	qa := acquireAsync(context.Background(), b, "a", mib)
	qb := acquireAsync(context.Background(), b, "b", mib)
	waitFor(t, "two waiters", func() bool { return b.Stats().Queued == 2 })

	_, err := b.Acquire(context.Background(), "c", mib)
	require.ErrorIs(t, err, kdf.ErrBusy)
	var be *kdf.BusyError
	require.ErrorAs(t, err, &be)
	require.GreaterOrEqual(t, be.RetryAfter, time.Second)
	require.Equal(t, kdf.Stats{Running: 2, Memory: 2 * mib, Queued: 2}, b.Stats())

	relA()
	relA() // a second call changes nothing
	relB()
	for _, ch := range []<-chan result{qa, qb} {
		r := <-ch
		require.NoError(t, r.err)
		r.release()
	}
	require.Equal(t, kdf.Stats{}, b.Stats())
}

// TestTenantCannotHoldItAll: one tenant that saturates its share of the slots and of the
// queue gets ErrBusy for more, while a second tenant is admitted at once and finds a
// place in the queue behind that.
func TestTenantCannotHoldItAll(t *testing.T) {
	t.Parallel()
	b := kdf.New(kdf.Config{Memory: 64 * mib, Slots: 4, Queue: 4})
	var held []func()
	for range 2 { // half the slots
		held = append(held, mustAcquire(t, b, "a", mib))
	}
	// A's third derivation waits although two slots are free: they are not its share.
	var waiting []<-chan result
	for range 2 { // half the queue
		waiting = append(waiting, acquireAsync(context.Background(), b, "a", mib))
	}
	waitFor(t, "a's waiters", func() bool { return b.Stats().Queued == 2 })
	_, err := b.Acquire(context.Background(), "a", mib)
	require.ErrorIs(t, err, kdf.ErrBusy, "a is past its share of the queue")

	// B is admitted straight away, twice, past A's waiters.
	for range 2 {
		held = append(held, mustAcquire(t, b, "b", mib))
	}
	// And with every slot taken, B still finds a place in the queue.
	qb := acquireAsync(context.Background(), b, "b", mib)
	waitFor(t, "b's waiter", func() bool { return b.Stats().Queued == 3 })

	for _, r := range held {
		r()
	}
	for _, ch := range append(waiting, qb) {
		r := <-ch
		require.NoError(t, r.err)
		r.release()
	}
	require.Equal(t, kdf.Stats{}, b.Stats())
}

// TestTenantMemoryShare: a tenant holding derivations may not take more than half the
// memory, but a tenant holding nothing may run one derivation larger than that.
func TestTenantMemoryShare(t *testing.T) {
	t.Parallel()
	b := kdf.New(kdf.Config{Memory: 64 * mib, Slots: 8, Queue: 8})
	big := mustAcquire(t, b, "a", 40*mib) // over half, alone for a
	small := acquireAsync(context.Background(), b, "a", mib)
	waitFor(t, "a's second derivation to wait", func() bool { return b.Stats().Queued == 1 })
	relB := mustAcquire(t, b, "b", 20*mib) // b is not held back by a
	big()
	r := <-small
	require.NoError(t, r.err)
	r.release()
	relB()
	require.Equal(t, kdf.Stats{}, b.Stats())
}

// TestLargeWaiterIsNotOvertaken: a waiter held back by the free memory keeps its turn;
// smaller derivations that arrive after it wait behind it.
func TestLargeWaiterIsNotOvertaken(t *testing.T) {
	t.Parallel()
	b := kdf.New(kdf.Config{Memory: 64 * mib, Slots: 8, Queue: 8})
	relA := mustAcquire(t, b, "a", 40*mib)
	large := acquireAsync(context.Background(), b, "b", 40*mib)
	waitFor(t, "the large waiter", func() bool { return b.Stats().Queued == 1 })
	smallCtx, cancel := context.WithCancel(context.Background())
	small := acquireAsync(smallCtx, b, "c", mib) // fits the free memory, but comes later
	waitFor(t, "the small waiter", func() bool { return b.Stats().Queued == 2 })
	relA()
	r := <-large
	require.NoError(t, r.err)
	rs := <-small
	require.NoError(t, rs.err, "admitted once the large one started and memory allows")
	rs.release()
	r.release()
	cancel()
	require.Equal(t, kdf.Stats{}, b.Stats())
}

// TestCancelLeavesTheQueue: a waiter whose context ends leaves the queue with the
// context's error and is never admitted; the place it held goes to the next caller.
func TestCancelLeavesTheQueue(t *testing.T) {
	t.Parallel()
	b := kdf.New(kdf.Config{Memory: 64 * mib, Slots: 1, Queue: 2})
	rel := mustAcquire(t, b, "a", mib)
	ctx, cancel := context.WithCancel(context.Background())
	queued := acquireAsync(ctx, b, "b", mib)
	waitFor(t, "the waiter", func() bool { return b.Stats().Queued == 1 })
	cancel()
	r := <-queued
	require.ErrorIs(t, r.err, context.Canceled)
	require.Nil(t, r.release)
	require.Equal(t, kdf.Stats{Running: 1, Memory: mib}, b.Stats())

	// A context already ended is refused before it queues or takes anything.
	_, err := b.Acquire(ctx, "c", mib)
	require.ErrorIs(t, err, context.Canceled)

	rel()
	require.Equal(t, kdf.Stats{}, b.Stats())
	mustAcquire(t, b, "b", mib)()
}

// TestManyCallers: under contention every caller is either admitted or refused with
// ErrBusy, the budget is never exceeded, and everything is given back.
func TestManyCallers(t *testing.T) {
	t.Parallel()
	const slots, memory = 3, 10 * mib
	b := kdf.New(kdf.Config{Memory: memory, Slots: slots, Queue: 4})
	var (
		mu      sync.Mutex
		running int
		used    int64
		wg      sync.WaitGroup
	)
	for i := range 200 {
		wg.Go(func() {
			tenant := []string{"a", "b", "c"}[i%3]
			m := int64(1+i%4) * mib
			release, err := b.Acquire(context.Background(), tenant, m)
			if errors.Is(err, kdf.ErrBusy) {
				return
			}
			if err != nil {
				t.Errorf("acquire: %v", err)
				return
			}
			mu.Lock()
			running++
			used += m
			if running > slots || used > memory {
				t.Errorf("over budget: %d running, %d bytes", running, used)
			}
			mu.Unlock()
			mu.Lock()
			running--
			used -= m
			mu.Unlock()
			release()
		})
	}
	wg.Wait()
	require.Equal(t, kdf.Stats{}, b.Stats())
}

// TestNilBudgetAdmits: the runtime side runs without a budget.
func TestNilBudgetAdmits(t *testing.T) {
	t.Parallel()
	var b *kdf.Budget
	release, err := b.Acquire(context.Background(), "a", 1<<40)
	require.NoError(t, err)
	release()
	require.Equal(t, kdf.Stats{}, b.Stats())
}
