package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/repo"
)

// Pacing of the lag probe: the file is looked at every lagPoll (the resolution of the
// figure); the database every lagMark, which bounds how many marks are outstanding.
const (
	lagPoll    = 10 * time.Millisecond
	lagMark    = 50 * time.Millisecond
	lagTimeout = 15 * time.Second
)

// mark is a committed tenant generation and when it was read back from the database.
type mark struct {
	at  time.Time
	gen int64
}

// lagProbe measures how long a committed change takes to reach the tenant's
// credentials.json: it reads the tenant's generation from the database every lagMark (a
// POST that answered 201 has committed, so it is included), and watches the file's
// header; a mark's lag is from when it was read to when the file first carries that
// generation or a later one. It errs high by up to lagPoll.
type lagProbe struct {
	b        *bench
	tenant   string
	path     string
	finished chan struct{}

	hist      Histogram
	pending   []mark
	seenFile  bool
	timeouts  int
	err       error
	lastStamp string
}

func newLagProbe(b *bench, tenant string) *lagProbe {
	return &lagProbe{b: b, tenant: tenant, path: credfile.Path(b.srv.dataDir, tenant), finished: make(chan struct{})}
}

// finish tells the probe the load is over: it stops marking and waits for what is pending.
func (p *lagProbe) finish() { close(p.finished) }

func (p *lagProbe) run(ctx context.Context) {
	conn, err := pgx.Connect(ctx, p.b.seed.url)
	if err != nil {
		p.err = fmt.Errorf("connect for the lag probe: %w", err)
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tick := time.NewTicker(lagPoll)
	defer tick.Stop()
	var (
		lastGen   int64 = -1
		nextMark  time.Time
		finishing bool
		deadline  time.Time
	)
	for {
		select {
		case <-ctx.Done():
			p.timeouts += len(p.pending)
			return
		case <-p.finished:
			p.finished = nil
			finishing, deadline = true, time.Now().Add(lagTimeout)
		case now := <-tick.C:
			if !finishing && !now.Before(nextMark) {
				nextMark = now.Add(lagMark)
				var gen int64
				if err := func() (err error) { gen, err = repo.GetGeneration(ctx, conn, p.tenant); return }(); err != nil {
					if ctx.Err() == nil {
						p.err = fmt.Errorf("read generation: %w", err)
					}
					return
				}
				if gen != lastGen {
					p.pending = append(p.pending, mark{at: time.Now(), gen: gen})
					lastGen = gen
				}
			}
			p.poll()
			if finishing && (len(p.pending) == 0 || time.Now().After(deadline)) {
				p.timeouts += len(p.pending)
				return
			}
		}
	}
}

// poll resolves the marks the file now covers.
func (p *lagProbe) poll() {
	fi, err := os.Stat(p.path)
	if err != nil {
		return
	}
	stamp := fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
	if stamp == p.lastStamp {
		return
	}
	gen, ok := fileGeneration(p.path)
	if !ok {
		return
	}
	now := time.Now()
	p.lastStamp, p.seenFile = stamp, true
	kept := p.pending[:0]
	for _, m := range p.pending {
		if m.gen <= gen {
			p.hist.Record(now.Sub(m.at))
		} else {
			kept = append(kept, m)
		}
	}
	p.pending = kept
}

var generationField = regexp.MustCompile(`"generation"\s*:\s*([0-9]+)`)

// fileGeneration reads the generation of a credentials file from its clear header. The
// header comes first in the file, so the start of it usually suffices; otherwise the whole
// file is parsed.
func fileGeneration(path string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	if m := generationField.FindSubmatch(head[:n]); m != nil {
		g, err := strconv.ParseInt(string(m[1]), 10, 64)
		return g, err == nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	h, err := credfile.ParseHeader(data)
	if err != nil {
		return 0, false
	}
	return h.Generation, true
}

// row reports the lag's p50 and p99 against the 2 s target.
func (p *lagProbe) row() Row {
	r := Row{Scenario: "change-to-disk lag during POST load", Target: "p99 < 1.00s", Ops: p.hist.Count(),
		P50: Millis(p.hist.Quantile(0.5)), P99: Millis(p.hist.Quantile(0.99))}
	switch {
	case p.err != nil:
		r.Status, r.Note = statusNotAvailable, p.err.Error()
	case !p.seenFile:
		r.Status, r.Note = statusNotAvailable, "no credentials.json was written for the tenant: the server runs no export sync"
	default:
		r.Status = judge(p.timeouts == 0 && p.hist.Quantile(0.99) < time.Second)
		r.Note = fmt.Sprintf("%d committed generations sampled every %s, file polled every %s", p.hist.Count(), lagMark, lagPoll)
		if p.timeouts > 0 {
			r.Note = joinNote(r.Note, fmt.Sprintf("%d not on disk within %s", p.timeouts, lagTimeout))
		}
	}
	return r
}
