package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/tenantkey"
)

const tenantReplicas = "replicas" // one entry PUT on replica A and read on replica B

// replica is a catalogue as a server has it (its own pool, read cache and export loop
// listening for changes), in this process.
type replica struct {
	svc  *catalog.Service
	stop func()
}

func (b *bench) newReplica(ctx context.Context) (*replica, error) {
	pool, err := pgxpool.NewWithConfig(ctx, b.pool.Config().Copy())
	if err != nil {
		return nil, fmt.Errorf("open replica pool: %w", err)
	}
	cache := &catalog.Cache{}
	keys := &tenantkey.Keys{Pool: pool, Master: b.keys.Master, Logger: b.log}
	// Replicas share the server's data directory, as replicas of one deployment share their
	// volume: the pass at start finds the server's files current instead of exporting every
	// tenant again (a million entries once the scale scenario ran) during the measurement.
	sy := &fileexport.Syncer{Exporter: &fileexport.Exporter{Pool: pool, Keys: keys, DataDir: b.srv.dataDir, Logger: b.log},
		Logger: b.log, Watcher: cache}
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = sy.Run(loopCtx)
	}()
	r := &replica{svc: &catalog.Service{Pool: pool, Keys: keys, Logger: b.log, Cache: cache},
		stop: func() { cancel(); <-done; pool.Close() }}
	for deadline := time.Now().Add(30 * time.Second); !cache.Serving(); {
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.stop()
			return nil, errors.New("the replica's listener did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r, nil
}

// scenarioReplicas: a PUT acknowledged by replica A, then GET on replica B until B shows
// it: the staleness between two replicas on one database, which is the notification's
// latency plus one read (B's cache serves until the notification arrives).
func (b *bench) scenarioReplicas(ctx context.Context) error {
	a, err := b.newReplica(ctx)
	if err != nil {
		return err
	}
	defer a.stop()
	rb, err := b.newReplica(ctx)
	if err != nil {
		return err
	}
	defer rb.stop()
	p := b.pki.pairs[0]
	name, typ, src := "replicated", "client-pair", catalog.SourceInline
	if _, err := a.svc.Put(ctx, tenantReplicas, catalog.Input{ID: "replicated", Name: &name, Type: &typ, Source: &src,
		CertPEM: p.cert, KeyPEM: p.key}, catalog.Precondition{}); err != nil {
		return fmt.Errorf("create the replicated entry: %w", err)
	}
	writes := 200
	if b.s.Quick {
		writes = 30
	}
	res := &LoadResult{}
	start := time.Now()
	for i := range writes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		notes := fmt.Sprintf("write %d", i)
		if _, err := a.svc.Put(ctx, tenantReplicas, catalog.Input{ID: "replicated", Notes: &notes}, catalog.Precondition{}); err != nil {
			res.Errors++
			res.FirstErr = err
			continue
		}
		acked := time.Now()
		for {
			e, err := rb.svc.Get(ctx, tenantReplicas, "replicated")
			if err == nil && e.Notes == notes {
				break
			}
			if time.Since(acked) > 10*time.Second {
				return fmt.Errorf("replica B never showed write %d", i)
			}
		}
		res.Hist.Record(time.Since(acked))
		res.Ops++
	}
	res.Elapsed = time.Since(start)
	r := loadRow("write on replica A seen by GET on replica B (in process)", res)
	r.Throughput = 0
	b.add(underRow(r, "p99", res.Hist.Quantile(0.99), 100*time.Millisecond))
	return nil
}
