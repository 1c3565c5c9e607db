package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucketsAreContiguous(t *testing.T) {
	t.Parallel()
	// Every bucket's upper edge plus one starts the next bucket: no value is lost or
	// counted twice anywhere in the range.
	for i := range numBuckets - 1 {
		if i == numBuckets-2 {
			require.Equal(t, int64(math.MaxInt64), bucketUpper(i+1))
		}
		up := bucketUpper(i)
		require.Equal(t, i, bucketOf(up), "upper edge of bucket %d", i)
		require.Equal(t, i+1, bucketOf(up+1), "value after bucket %d", i)
	}
}

func TestQuantileWithinPrecision(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		gen  func(r *rand.Rand) time.Duration
	}{
		{"uniform microseconds", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(1_000_000)) }},
		{"exponential milliseconds", func(r *rand.Rand) time.Duration { return time.Duration(r.ExpFloat64() * 3e6) }},
		{"tiny integers", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(200)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(1, 2))
			var h Histogram
			vals := make([]time.Duration, 50_000)
			for i := range vals {
				vals[i] = tc.gen(r)
				h.Record(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
				exact := vals[int(q*float64(len(vals)))-1]
				got := h.Quantile(q)
				require.GreaterOrEqual(t, got, exact, "q=%v errs high, never low", q)
				require.LessOrEqual(t, float64(got), float64(exact)*1.01+1, "q=%v within 1%%", q)
			}
			require.Equal(t, vals[len(vals)-1], h.Quantile(1))
			require.Equal(t, vals[len(vals)-1], h.Max())
		})
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		all.Record(d)
	}
	var empty Histogram
	a.Merge(&empty)
	a.Merge(&b)
	require.Equal(t, all.Count(), a.Count())
	require.Equal(t, all.Quantile(0.5), a.Quantile(0.5))
	require.Equal(t, all.Quantile(0.99), a.Quantile(0.99))
	require.Equal(t, all.Max(), a.Max())
}

func TestEmptyAndNegative(t *testing.T) {
	t.Parallel()
	var h Histogram
	require.Zero(t, h.Quantile(0.99))
	h.Record(-time.Second)
	require.Equal(t, uint64(1), h.Count())
	require.Zero(t, h.Quantile(0.5))
}
