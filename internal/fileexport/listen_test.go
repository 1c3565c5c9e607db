package fileexport

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/repo"
)

// TestListenerOutageIsLoggedOnceAndReconciled runs the export loop's listener through a
// proxy that then drops every connection and refuses new ones for a while, as a pooler or a
// failover does: the outage is logged once however many retries it takes, the listener
// comes back by itself, and its reconcile writes the change it could not hear.
func TestListenerOutageIsLoggedOnceAndReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.createInline(t, "acme", "before", "ca-bundle")

	cfg := b.pool.Config().ConnConfig.Copy()
	proxy := newDropProxy(t, cfg.Host, cfg.Port)
	cfg.Host, cfg.Port, cfg.Fallbacks = "127.0.0.1", proxy.port(), nil

	logs := &recordingHandler{retries: make(chan struct{}, 100), back: make(chan struct{}, 1)}
	writes := make(chan Result, 100)
	x := &Exporter{Pool: b.pool, Keys: b.keys, DataDir: b.dataDir, Logger: testLogger(t), OnWrite: func(r Result) { writes <- r }}
	sy := &Syncer{Exporter: x, ListenConfig: cfg, Logger: slog.New(logs), Reconcile: time.Hour}
	done := make(chan struct{})
	go func() { _ = sy.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	awaitGeneration := func(gen int64) {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case r := <-writes:
				if r.Tenant == "acme" && r.Generation >= gen {
					return
				}
			case <-timeout:
				t.Fatalf("no file at generation %d", gen)
			}
		}
	}
	gen, err := repo.GetGeneration(ctx, b.pool, "acme")
	require.NoError(t, err)
	awaitGeneration(gen) // the pass after the first LISTEN

	proxy.drop(true)
	for range 3 { // three failed reconnects, each with a longer wait
		select {
		case <-logs.retries:
		case <-time.After(15 * time.Second):
			t.Fatal("the listener did not retry")
		}
	}
	b.createInline(t, "acme", "during", "ca-bundle") // its notification reaches no listener
	gen, err = repo.GetGeneration(ctx, b.pool, "acme")
	require.NoError(t, err)
	proxy.drop(false)
	select {
	case <-logs.back:
	case <-time.After(15 * time.Second):
		t.Fatal("the listener did not reconnect")
	}
	awaitGeneration(gen)
	require.Equal(t, 1, logs.count(slog.LevelWarn), "one warning for the outage, not one per retry")
}

// recordingHandler counts records by level and signals retries and the reconnect.
type recordingHandler struct {
	mu      sync.Mutex
	levels  map[slog.Level]int
	retries chan struct{}
	back    chan struct{}
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	if h.levels == nil {
		h.levels = map[slog.Level]int{}
	}
	h.levels[r.Level]++
	h.mu.Unlock()
	switch r.Message {
	case "export listener still disconnected":
		select {
		case h.retries <- struct{}{}:
		default:
		}
	case "export listener reconnected; reconciling every tenant":
		select {
		case h.back <- struct{}{}:
		default:
		}
	}
	return nil
}

func (h *recordingHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.levels[l]
}

// dropProxy forwards TCP connections to the database (a unix socket when host is a
// directory) until told to drop: then it closes every open connection and every new one.
type dropProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	dropped bool
	conns   []net.Conn
	target  func() (net.Conn, error)
}

func newDropProxy(t *testing.T, host string, port uint16) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &dropProxy{ln: ln}
	p.target = func() (net.Conn, error) {
		if len(host) > 0 && host[0] == '/' {
			return net.Dial("unix", host+"/.s.PGSQL."+itoa(int64(port)))
		}
		return net.Dial("tcp", net.JoinHostPort(host, itoa(int64(port))))
	}
	t.Cleanup(func() { _ = ln.Close(); p.drop(true) })
	go p.serve()
	return p
}

func (p *dropProxy) port() uint16 { return uint16(p.ln.Addr().(*net.TCPAddr).Port) }

func (p *dropProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.dropped {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := p.target()
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

func (p *dropProxy) drop(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropped = on
	if on {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}
