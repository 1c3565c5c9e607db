package fileexport

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/repo"
)

// Defaults of a Syncer.
const (
	DefaultReconcile = 30 * time.Second
	DefaultDebounce  = 50 * time.Millisecond
)

// Syncer keeps every tenant's file in step with the database: a pass at start, then an
// export whenever a change is announced (LISTEN on repo.GenerationChannel), plus a periodic
// reconcile that also catches notices lost while the listening connection was down. Bursts
// of notices for a tenant coalesce: at most one export per tenant runs at a time, and
// notices that arrive during it cause exactly one more.
type Syncer struct {
	// Exporter writes the files.
	Exporter *Exporter
	// ListenConfig is the connection that LISTENs: a direct one, past any transaction
	// pooler (LOOPZE_LISTEN_DATABASE_URL). Nil uses the settings of the Exporter's pool.
	ListenConfig *pgx.ConnConfig
	// Logger receives errors and reconnects.
	Logger *slog.Logger
	// Reconcile is the period of the full pass; DefaultReconcile when zero.
	Reconcile time.Duration
	// Debounce is how long a first notice waits for more before the export starts;
	// DefaultDebounce when zero.
	Debounce time.Duration
	// Concurrency bounds how many tenants export at once; DefaultConcurrency when zero.
	// A reconcile pass asks every tenant at once, and exports are CPU work that also hold
	// a pool connection: unbounded, a thousand tenants would starve the API of both.
	Concurrency int

	// Watcher, when set, hears what the listening connection hears (see Watcher).
	Watcher Watcher

	mu      sync.Mutex
	workers map[string]chan struct{}
	slots   chan struct{}
	wg      sync.WaitGroup
}

// DefaultConcurrency is how many tenants export at once unless Syncer.Concurrency says.
const DefaultConcurrency = 1

// acquire waits for an export slot; false when ctx ended first.
func (s *Syncer) acquire(ctx context.Context) bool {
	s.mu.Lock()
	if s.slots == nil {
		s.slots = make(chan struct{}, max(s.Concurrency, DefaultConcurrency))
	}
	slots := s.slots
	s.mu.Unlock()
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Syncer) release() { <-s.slots }

func (s *Syncer) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Run works until ctx ends, then waits for running exports to finish and returns nil.
func (s *Syncer) Run(ctx context.Context) error {
	reconcile := s.Reconcile
	if reconcile <= 0 {
		reconcile = DefaultReconcile
	}
	defer s.wg.Wait()

	// The pass at start runs once the listener is up (see listenOnce), so no change falls
	// between the two.
	listenErr := make(chan struct{})
	s.wg.Go(func() {
		defer close(listenErr)
		s.listen(ctx)
	})
	t := time.NewTicker(reconcile)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-listenErr:
			return nil
		case <-t.C:
			s.reloadKeys()
			s.reconcileAll(ctx)
		}
	}
}

// reconcileAll asks for an export of every tenant the database knows; tenants whose file is
// current cost one small query each.
func (s *Syncer) reconcileAll(ctx context.Context) {
	tenants, err := repo.ListTenants(ctx, s.Exporter.Pool)
	if err != nil {
		if ctx.Err() == nil {
			s.logger().Error("export reconcile: list tenants", "err", err)
		}
		return
	}
	for _, t := range tenants {
		s.kick(ctx, t.ID)
	}
}

func (s *Syncer) reloadKeys() {
	if err := s.Exporter.Keys.Reload(); err != nil {
		s.logger().Error("reload keys", "err", err)
	}
}

// kick asks tenant's worker for an export, starting the worker on first use.
func (s *Syncer) kick(ctx context.Context, tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	if s.workers == nil {
		s.workers = map[string]chan struct{}{}
	}
	ch, ok := s.workers[tenant]
	if !ok {
		ch = make(chan struct{}, 1)
		s.workers[tenant] = ch
		s.wg.Go(func() { s.work(ctx, tenant, ch) })
	}
	select {
	case ch <- struct{}{}:
	default: // an export is already asked for; it will see this change too
	}
}

// work exports one tenant each time it is kicked, after the debounce window.
func (s *Syncer) work(ctx context.Context, tenant string, kicks <-chan struct{}) {
	debounce := s.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	timer := time.NewTimer(0)
	<-timer.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-kicks:
		}
		timer.Reset(debounce)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		// Kicks that came during the window are answered by this export.
		select {
		case <-kicks:
		default:
		}
		if !s.acquire(ctx) {
			return
		}
		_, err := s.Exporter.ExportTenant(ctx, tenant, false)
		s.release()
		if err != nil && ctx.Err() == nil {
			s.logger().Error("export failed; retried at the next change or reconcile", "tenant", tenant, "err", err)
		}
	}
}

// listen holds a connection LISTENing on the generation and keyring channels, reconnecting
// with backoff. After every connect it reconciles: that is the pass at start, and it
// catches the notices sent while no connection listened (a failover, a restart of the
// server or of a pooler). An outage is logged when it begins and when it ends, not at
// every retry.
func (s *Syncer) listen(ctx context.Context) {
	const first = 100 * time.Millisecond
	var (
		backoff  = first
		down     time.Time // when the current outage began; zero while listening
		attempts int
	)
	up := func() {
		if !down.IsZero() {
			s.logger().Info("export listener reconnected; reconciling every tenant",
				"outage", time.Since(down).Round(time.Millisecond), "attempts", attempts)
		}
		down, attempts, backoff = time.Time{}, 0, first
	}
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, up)
		if ctx.Err() != nil {
			return
		}
		attempts++
		if down.IsZero() {
			down = time.Now()
			s.logger().Warn("export listener lost its database connection; reconnecting with backoff, logged again when back",
				"err", err)
		} else {
			s.logger().Debug("export listener still disconnected", "err", err, "attempts", attempts, "next_in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listenOnce connects, listens, calls connected, reconciles and then serves notifications
// until the connection fails.
func (s *Syncer) listenOnce(ctx context.Context, connected func()) error {
	defer s.watch().Disconnected()
	cfg := s.ListenConfig
	if cfg == nil {
		cfg = s.Exporter.Pool.Config().ConnConfig
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if err := repo.Listen(ctx, conn); err != nil {
		return err
	}
	connected()
	s.reconcileAll(ctx)
	s.watch().Connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch n.Channel {
		case repo.KeyringChannel:
			s.logger().Info("master key rotation announced; reloading keys")
			s.watch().KeysChanged() // before the reload too: no sealed value outlives its key
			s.reloadKeys()
			s.watch().KeysChanged()
			s.reconcileAll(ctx)
		case repo.GenerationChannel:
			tenant := n.Payload
			if tenant == "" {
				continue
			}
			s.watch().Changed(tenant)
			s.Exporter.MarkPending(tenant, s.Exporter.now())
			s.kick(ctx, tenant)
		}
	}
}
