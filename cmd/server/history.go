package main

import (
	"context"
	"time"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/config"
)

// pruneInterval is how often serve applies the history retention.
const pruneInterval = time.Hour

// startPruner applies the history retention in the background until ctx ends or the
// returned stop is called, which waits for it.
func startPruner(ctx context.Context, cfg config.Config, svc *services) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.catalog.RunPruner(ctx, cfg.HistoryKeep, time.Duration(cfg.HistoryDays)*24*time.Hour, pruneInterval)
	}()
	return func() { cancel(); <-done }
}

// startChainer runs the chainer of the audit records this process writes (and of any a
// stopped process left pending) until stop is called.
func startChainer(ctx context.Context, svc *services) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.chainer.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// operator marks ctx as an operator subcommand's, for the audit trail.
func operator(ctx context.Context, command string) context.Context {
	return audit.WithActor(ctx, audit.Actor{Subject: "loopze-certs " + command, Role: "operator"})
}
