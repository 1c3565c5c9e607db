package main

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits sub-buckets per power of two, so a
// recorded value lands in a bucket at most 1/2^(subBits-1) (0.8%) wider than itself. That
// is the HdrHistogram layout with a fixed precision and no upper bound to configure.
const (
	subBits    = 8
	subCount   = 1 << subBits
	halfCount  = subCount / 2
	numBuckets = (63-subBits)*halfCount + subCount // int64 values have at most 63 bits
)

// Histogram records latencies in log-linear buckets, so percentiles of millions of samples
// cost a fixed 60 KiB and no sorting. It is not safe for concurrent use: each worker of a
// load run keeps its own and they are merged at the end.
type Histogram struct {
	counts   [numBuckets]uint64
	total    uint64
	min, max int64
}

// bucketOf maps a non-negative value to its bucket: values below subCount have a bucket
// each; above, the top subBits bits of the value pick the bucket within its power of two.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits
	return shift*halfCount + int(uint64(v)>>shift)
}

// bucketUpper is the largest value that falls into bucket i.
func bucketUpper(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i - halfCount) / halfCount
	sub := int64(i - shift*halfCount)
	return (sub+1)<<shift - 1
}

// Record adds one latency; negative values count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
}

// Count is the number of samples recorded.
func (h *Histogram) Count() uint64 { return h.total }

// Max is the largest sample, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the value at or below which a fraction q of the samples lie, as the
// upper edge of the bucket holding that sample (so it errs high, never low), capped at the
// exact maximum. An empty histogram returns 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
