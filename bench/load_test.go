package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRunLoadCountsOnlyMeasuredOperations(t *testing.T) {
	t.Parallel()
	var calls, fails atomic.Int64
	boom := errors.New("boom")
	res := runLoad(context.Background(), 4, 20*time.Millisecond, 50*time.Millisecond, func(context.Context, int, *rand.Rand) error {
		if calls.Add(1)%10 == 0 {
			fails.Add(1)
			return boom
		}
		return nil
	})
	require.Positive(t, res.Ops)
	require.Positive(t, res.Errors)
	require.ErrorIs(t, res.FirstErr, boom)
	// Warm-up operations ran but were not counted.
	require.Less(t, res.Ops+res.Errors, uint64(calls.Load()))
	require.LessOrEqual(t, int64(res.Errors), fails.Load())
	require.Equal(t, res.Ops, res.Hist.Count(), "only successes are timed")
	require.Positive(t, res.Throughput())
}

func TestRunLoadStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var once atomic.Bool
	done := make(chan *LoadResult)
	go func() {
		done <- runLoad(ctx, 2, 0, time.Hour, func(ctx context.Context, _ int, _ *rand.Rand) error {
			if once.CompareAndSwap(false, true) {
				close(started)
			}
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	<-started
	cancel()
	res := <-done
	require.Zero(t, res.Errors, "operations cut short by the cancel are not failures")
}

func TestRunSequence(t *testing.T) {
	t.Parallel()
	n := 0
	res := runSequence(context.Background(), 2, 5, func(context.Context, int, *rand.Rand) error {
		n++
		if n == 4 {
			return errors.New("third measured run fails")
		}
		return nil
	})
	require.Equal(t, 7, n)
	require.Equal(t, uint64(4), res.Ops)
	require.Equal(t, uint64(1), res.Errors)
}

func TestParsePgbench(t *testing.T) {
	t.Parallel()
	out := "number of failed transactions: 0 (0.000%)\nlatency average = 0.205 ms\ninitial connection time = 3.1 ms\ntps = 38958.241075 (without initial connection time)\n"
	tps, avg, err := parsePgbench(out)
	require.NoError(t, err)
	require.InDelta(t, 38958.24, tps, 0.01)
	require.Equal(t, 205*time.Microsecond, avg)
	_, _, err = parsePgbench("pgbench: error: connection refused")
	require.Error(t, err)
}
