package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Op is one operation of a load run, done by worker w with its own random source. An error
// counts the operation as failed; its latency is not recorded.
type Op func(ctx context.Context, w int, rnd *rand.Rand) error

// LoadResult is what a closed-loop run measured after its warm-up.
type LoadResult struct {
	Ops      uint64
	Errors   uint64
	Elapsed  time.Duration
	Hist     Histogram
	FirstErr error
}

// Throughput is successful operations per second.
func (r *LoadResult) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// runLoad runs op in a closed loop on concurrency workers: warm-up first (not recorded:
// connection set-up, caches, the JIT-less but still cold paths), then dur of measurement.
// Each worker keeps its own histogram so recording takes no lock.
func runLoad(ctx context.Context, concurrency int, warmup, dur time.Duration, op Op) *LoadResult {
	start := time.Now()
	measureFrom := start.Add(warmup)
	deadline := measureFrom.Add(dur)
	parts := make([]*workerPart, concurrency)
	var wg sync.WaitGroup
	for w := range concurrency {
		p := &workerPart{}
		parts[w] = p
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(w)))
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				err := op(ctx, w, rnd)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					p.errs++
					if p.firstErr == nil {
						p.firstErr = err
					}
					continue
				}
				p.hist.Record(time.Since(t0))
				p.ops++
			}
		})
	}
	wg.Wait()
	// The last operations start before the deadline and end after it; they are counted,
	// so the window runs until the last of them is done.
	res := &LoadResult{Elapsed: time.Since(measureFrom)}
	for _, p := range parts {
		res.Hist.Merge(&p.hist)
		res.Ops += p.ops
		res.Errors += p.errs
		if res.FirstErr == nil {
			res.FirstErr = p.firstErr
		}
	}
	return res
}

// workerPart is one worker's share of a run.
type workerPart struct {
	hist      Histogram
	ops, errs uint64
	firstErr  error
}

// runSequence runs op n times one after the other after warm warm-up runs, for scenarios
// measured per operation (a deploy, an export) rather than under concurrency.
func runSequence(ctx context.Context, warm, n int, op Op) *LoadResult {
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	res := &LoadResult{}
	for i := range warm + n {
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		err := op(ctx, 0, rnd)
		d := time.Since(t0)
		if i < warm {
			continue
		}
		res.Elapsed += d
		if err != nil {
			res.Errors++
			if res.FirstErr == nil {
				res.FirstErr = err
			}
			continue
		}
		res.Hist.Record(d)
		res.Ops++
	}
	return res
}

// newClient is the load generator's HTTP client: HTTP/1.1 with keep-alive, enough idle
// connections that every worker keeps its own, no compression (the server does none).
func newClient(concurrency int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			MaxIdleConns:        concurrency * 2,
			MaxIdleConnsPerHost: concurrency * 2,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
		Timeout: time.Minute,
	}
}

// errStatus is an unexpected HTTP status; the body's start is kept to tell why.
type errStatus struct {
	method, path string
	code         int
	body         string
}

func (e *errStatus) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.method, e.path, e.code, e.body)
}

// do sends one request and drains the body so the connection is reused. want is the
// expected status.
func do(ctx context.Context, c *http.Client, req *http.Request, want int) error {
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		_, _ = io.Copy(io.Discard, resp.Body)
		return &errStatus{method: req.Method, path: req.URL.Path, code: resp.StatusCode, body: string(b)}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}
