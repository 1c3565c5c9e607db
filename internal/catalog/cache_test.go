package catalog_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/keyrotation"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
)

// replica is one server's catalogue over a shared database: its own pool, its own cache,
// its own export loop listening for changes.
type replica struct {
	svc   *catalog.Service
	cache *catalog.Cache
	watch *recorder
}

// recorder passes the listener's events on to the cache and lets a test see them, or
// hold the listener while it is down.
type recorder struct {
	cache   *catalog.Cache
	changed chan string
	keys    chan struct{}

	mu   sync.Mutex
	hold chan struct{} // while set, Disconnected waits for it to close
	down chan struct{} // signalled on Disconnected
}

func (r *recorder) Changed(tenant string) {
	r.cache.Changed(tenant)
	select {
	case r.changed <- tenant:
	default:
	}
}

func (r *recorder) KeysChanged() {
	r.cache.KeysChanged()
	select {
	case r.keys <- struct{}{}:
	default:
	}
}

func (r *recorder) Connected() { r.cache.Connected() }

func (r *recorder) Disconnected() {
	r.cache.Disconnected()
	r.mu.Lock()
	hold, down := r.hold, r.down
	r.mu.Unlock()
	if down != nil {
		select {
		case down <- struct{}{}:
		default:
		}
	}
	if hold != nil {
		<-hold
	}
}

// newReplica starts a replica on url whose master key is in dataDir.
func newReplica(t testing.TB, url, dataDir string) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := db.Open(ctx, url, logging.Discard())
	require.NoError(t, err)
	keys := tenantkeytest.New(t, pool, dataDir)
	cache := &catalog.Cache{}
	rec := &recorder{cache: cache, changed: make(chan string, 64), keys: make(chan struct{}, 8)}
	x := &fileexport.Exporter{Pool: pool, Keys: keys, DataDir: t.TempDir()}
	sy := &fileexport.Syncer{Exporter: x, Watcher: rec, Debounce: time.Millisecond}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = sy.Run(ctx)
	}()
	t.Cleanup(func() {
		rec.mu.Lock()
		if rec.hold != nil {
			close(rec.hold)
			rec.hold = nil
		}
		rec.mu.Unlock()
		cancel()
		<-done
		pool.Close()
	})
	require.Eventually(t, cache.Serving, 10*time.Second, 5*time.Millisecond, "the listener comes up")
	return &replica{svc: &catalog.Service{Pool: pool, Keys: keys, Logger: logging.Discard(), Cache: cache}, cache: cache, watch: rec}
}

// drain forgets the notices heard so far.
func (r *replica) drain() {
	for {
		select {
		case <-r.watch.changed:
		default:
			return
		}
	}
}

// awaitChange waits for the notification of tenant's next change.
func (r *replica) awaitChange(t testing.TB, tenant string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-r.watch.changed:
			if got == tenant {
				return
			}
		case <-timeout:
			t.Fatalf("no change notification for %s", tenant)
		}
	}
}

// sneak changes an entry's notes behind the catalogue's back: no generation moves, no
// notification goes out. Only a read that reaches the database sees it, which tells a
// cached answer from a fresh one.
func sneak(t *testing.T, pool *pgxpool.Pool, tenant, id, notes string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.InTenant(ctx, pool, tenant, func(tx pgx.Tx) error {
		found, err := repo.LookupEntries(ctx, tx, tenant, []string{id})
		if err != nil || len(found) != 1 {
			return fmt.Errorf("entry %s: %v", id, err)
		}
		after := *found[0]
		after.Notes = notes
		return repo.WriteEntries(ctx, tx, tenant, false, []repo.EntryWrite{{Row: &after, Before: found[0]}})
	}))
}

func notes(t *testing.T, s *catalog.Service, tenant, id string) string {
	t.Helper()
	e, err := s.Get(context.Background(), tenant, id)
	require.NoError(t, err)
	return e.Notes
}

func TestCacheServesAndReadsYourWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newReplica(t, testdb.URL(t), t.TempDir())
	ca := materialtest.NewCA(t, materialtest.Options{})
	_, err := a.svc.Create(ctx, "acme", pairInput("edge", ca.Issue(t, materialtest.Options{})))
	require.NoError(t, err)
	a.awaitChange(t, "acme") // its own notification, which empties its cache once

	require.Equal(t, "", notes(t, a.svc, "acme", "edge"))
	sneak(t, a.svc.Pool, "acme", "edge", "behind its back")
	require.Equal(t, "", notes(t, a.svc, "acme", "edge"), "an unchanged tenant is answered from the cache")
	page, _, err := a.svc.List(ctx, "acme", repo.ListFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)

	// Each write is seen by the next read of the replica that made it, with no wait.
	for _, n := range []string{"one", "two", "three"} {
		_, err := a.svc.Put(ctx, "acme", catalog.Input{ID: "edge", Notes: ptr(n)}, catalog.Precondition{})
		require.NoError(t, err)
		require.Equal(t, n, notes(t, a.svc, "acme", "edge"))
		page, _, err := a.svc.List(ctx, "acme", repo.ListFilter{Limit: 10})
		require.NoError(t, err)
		require.Equal(t, n, page[0].Notes)
	}
	_, err = a.svc.Create(ctx, "acme", pairInput("second", ca.Issue(t, materialtest.Options{})))
	require.NoError(t, err)
	page, _, err = a.svc.List(ctx, "acme", repo.ListFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 2)
	found, err := a.svc.Lookup(ctx, "acme", []string{"second", "missing"})
	require.NoError(t, err)
	require.Len(t, found, 1)
	require.NoError(t, a.svc.Delete(ctx, "acme", "second", catalog.Precondition{}))
	_, err = a.svc.Get(ctx, "acme", "second")
	require.ErrorIs(t, err, repo.ErrNotFound)
	found, err = a.svc.Lookup(ctx, "acme", []string{"second"})
	require.NoError(t, err)
	require.Empty(t, found)

	// A value handed out is a copy: changing it changes nothing cached.
	e, err := a.svc.Get(ctx, "acme", "edge")
	require.NoError(t, err)
	e.Notes = "scribbled"
	require.Equal(t, "three", notes(t, a.svc, "acme", "edge"))
}

// A change on replica A is served by replica B once the notification reached B, never
// before A committed it.
func TestCacheFollowsAnotherReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, dir := testdb.URL(t), t.TempDir()
	a, b := newReplica(t, url, dir), newReplica(t, url, dir)
	ca := materialtest.NewCA(t, materialtest.Options{})
	b.drain()
	_, err := a.svc.Create(ctx, "acme", pairInput("edge", ca.Issue(t, materialtest.Options{})))
	require.NoError(t, err)
	b.awaitChange(t, "acme")
	require.Equal(t, "", notes(t, b.svc, "acme", "edge"))

	// A change held uncommitted on A: B answers the committed state, cached or not.
	held, release, committed := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		committed <- db.InTenant(ctx, a.svc.Pool, "acme", func(tx pgx.Tx) error {
			if _, err := repo.BumpGeneration(ctx, tx, "acme"); err != nil {
				return err
			}
			found, err := repo.LookupEntries(ctx, tx, "acme", []string{"edge"})
			if err != nil || len(found) != 1 {
				return fmt.Errorf("entry edge: %v", err)
			}
			after := *found[0]
			after.Notes = "renewed"
			if err := repo.WriteEntries(ctx, tx, "acme", false, []repo.EntryWrite{{Row: &after, Before: found[0]}}); err != nil {
				return err
			}
			close(held)
			<-release
			return nil
		})
	}()
	select {
	case <-held:
	case err := <-committed:
		t.Fatalf("the held change failed: %v", err)
	}
	b.drain()
	for range 3 {
		require.Equal(t, "", notes(t, b.svc, "acme", "edge"), "not before the commit")
		refs, total, err := b.svc.References(ctx, "acme", "edge", nil, 10)
		require.NoError(t, err)
		require.Empty(t, refs)
		require.Zero(t, total)
	}
	close(release)
	require.NoError(t, <-committed)
	b.awaitChange(t, "acme")
	require.Equal(t, "renewed", notes(t, b.svc, "acme", "edge"), "at once after the notification")

	// Through the catalogue of A, and for every kind of read of B.
	page, _, err := b.svc.List(ctx, "acme", repo.ListFilter{Limit: 10})
	require.NoError(t, err)
	require.Equal(t, "renewed", page[0].Notes)
	b.drain()
	_, err = a.svc.Put(ctx, "acme", catalog.Input{ID: "edge", Notes: ptr("again")}, catalog.Precondition{})
	require.NoError(t, err)
	b.awaitChange(t, "acme")
	require.Equal(t, "again", notes(t, b.svc, "acme", "edge"))
	page, _, err = b.svc.List(ctx, "acme", repo.ListFilter{Limit: 10})
	require.NoError(t, err)
	require.Equal(t, "again", page[0].Notes)
}

// While the listening connection is down every read goes to the database; once it is
// back (and reconciled) the cache serves again.
func TestCacheBypassedWhileListenerDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newReplica(t, testdb.URL(t), t.TempDir())
	ca := materialtest.NewCA(t, materialtest.Options{})
	_, err := a.svc.Create(ctx, "acme", pairInput("edge", ca.Issue(t, materialtest.Options{})))
	require.NoError(t, err)
	a.awaitChange(t, "acme")
	require.Equal(t, "", notes(t, a.svc, "acme", "edge"))

	hold, down := make(chan struct{}), make(chan struct{}, 1)
	a.watch.mu.Lock()
	a.watch.hold, a.watch.down = hold, down
	a.watch.mu.Unlock()
	// Cut the listening connection from the server side.
	_, err = a.svc.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`)
	require.NoError(t, err)
	select {
	case <-down:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not notice its connection was cut")
	}
	require.False(t, a.cache.Serving())
	sneak(t, a.svc.Pool, "acme", "edge", "while down")
	require.Equal(t, "while down", notes(t, a.svc, "acme", "edge"), "bypassed while the listener is down")
	sneak(t, a.svc.Pool, "acme", "edge", "still down")
	require.Equal(t, "still down", notes(t, a.svc, "acme", "edge"))

	a.watch.mu.Lock()
	a.watch.hold, a.watch.down = nil, nil
	a.watch.mu.Unlock()
	close(hold)
	require.Eventually(t, a.cache.Serving, 10*time.Second, 5*time.Millisecond, "the listener comes back")
	require.Equal(t, "still down", notes(t, a.svc, "acme", "edge"))
	sneak(t, a.svc.Pool, "acme", "edge", "cached again")
	require.Equal(t, "still down", notes(t, a.svc, "acme", "edge"), "served from the cache once back")
}

// No cached value survives a delete, a PUT, a restore or a key rotation made elsewhere.
func TestNoCachedValueSurvivesAChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, dir := testdb.URL(t), t.TempDir()
	a, b := newReplica(t, url, dir), newReplica(t, url, dir)
	ca := materialtest.NewCA(t, materialtest.Options{})
	for _, id := range []string{"edge", "gone"} {
		b.drain()
		_, err := a.svc.Create(ctx, "acme", pairInput(id, ca.Issue(t, materialtest.Options{})))
		require.NoError(t, err)
		b.awaitChange(t, "acme")
	}
	warm := func() {
		t.Helper()
		for _, id := range []string{"edge", "gone"} {
			_, _ = b.svc.Get(ctx, "acme", id)
		}
		_, _, err := b.svc.List(ctx, "acme", repo.ListFilter{Limit: 10})
		require.NoError(t, err)
		_, err = b.svc.Lookup(ctx, "acme", []string{"edge", "gone"})
		require.NoError(t, err)
	}
	warm()

	b.drain()
	// PUT.
	_, err := a.svc.Put(ctx, "acme", catalog.Input{ID: "edge", Notes: ptr("put")}, catalog.Precondition{})
	require.NoError(t, err)
	b.awaitChange(t, "acme")
	require.Equal(t, "put", notes(t, b.svc, "acme", "edge"))
	warm()

	b.drain()
	// Delete.
	require.NoError(t, a.svc.Delete(ctx, "acme", "gone", catalog.Precondition{}))
	b.awaitChange(t, "acme")
	_, err = b.svc.Get(ctx, "acme", "gone")
	require.ErrorIs(t, err, repo.ErrNotFound)
	page, _, err := b.svc.List(ctx, "acme", repo.ListFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)
	found, err := b.svc.Lookup(ctx, "acme", []string{"edge", "gone"})
	require.NoError(t, err)
	require.Len(t, found, 1)
	warm()

	// Restore of an earlier file: the restored rows replace the cached ones.
	x := &fileexport.Exporter{Pool: a.svc.Pool, Keys: a.svc.Keys, DataDir: t.TempDir()}
	res, err := x.ExportTenant(ctx, "acme", true)
	require.NoError(t, err)
	file, err := os.ReadFile(res.Path)
	require.NoError(t, err)
	b.drain()
	_, err = a.svc.Put(ctx, "acme", catalog.Input{ID: "edge", Notes: ptr("after the backup")}, catalog.Precondition{})
	require.NoError(t, err)
	b.awaitChange(t, "acme")
	require.Equal(t, "after the backup", notes(t, b.svc, "acme", "edge"))
	warm()
	im := &fileexport.Importer{Pool: a.svc.Pool, Catalog: a.svc, Keys: a.svc.Keys, Logger: logging.Discard()}
	b.drain()
	_, err = im.Import(ctx, file, fileexport.ImportOptions{Tenant: "acme", Replace: true})
	require.NoError(t, err)
	b.awaitChange(t, "acme")
	require.Equal(t, "put", notes(t, b.svc, "acme", "edge"))
	warm()

	// Restore of an earlier version from the entry's history.
	b.drain()
	_, err = a.svc.Restore(ctx, "acme", "edge", 1, catalog.Precondition{})
	require.NoError(t, err)
	b.awaitChange(t, "acme")
	require.Equal(t, "", notes(t, b.svc, "acme", "edge"), "the first version had no notes")
	warm()

	// A rotation of the tenant's key: the sealed material connection init opens is read
	// again, under the new key.
	before, err := b.svc.Lookup(ctx, "acme", []string{"edge"})
	require.NoError(t, err)
	rot := &keyrotation.Rotator{Pool: a.svc.Pool, DataDir: dir, Keys: a.svc.Keys, Logger: logging.Discard(), Settle: time.Millisecond}
	rep, err := rot.RotateTenant(ctx, "acme")
	require.NoError(t, err)
	require.NotEqual(t, before[0].Sealed.KeyID, rep.NewKeyID)
	require.Eventually(t, func() bool {
		after, err := b.svc.Lookup(ctx, "acme", []string{"edge"})
		return err == nil && len(after) == 1 && after[0].Sealed.KeyID == rep.NewKeyID
	}, 10*time.Second, 5*time.Millisecond)
	after, err := b.svc.Lookup(ctx, "acme", []string{"edge"})
	require.NoError(t, err)
	cert, _, err := b.svc.Open(context.Background(), after[0])
	require.NoError(t, err)
	require.NotEmpty(t, cert)
}

// Over HTTP, with the server's cache on: a client sees its own PUT, deploy and DELETE at
// once, in GET, the list, the reference count and the refusal of a delete.
func TestCacheOverHTTP(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	cache := &catalog.Cache{}
	env.Catalog.Cache = cache
	env.Workspace.Changed = cache.Changed
	ctx, cancel := context.WithCancel(context.Background())
	sy := &fileexport.Syncer{Exporter: &fileexport.Exporter{Pool: env.Pool, Keys: env.Keys, DataDir: t.TempDir()}, Watcher: cache}
	done := make(chan struct{})
	go func() { defer close(done); _ = sy.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, cache.Serving, 10*time.Second, 5*time.Millisecond)

	tok := env.Token(t, "acme", "admin")
	do := func(method, path string, body any) *apitest.Response {
		t.Helper()
		return env.Do(t, apitest.Request{Method: method, Path: path, Token: tok, Body: body})
	}
	ca := materialtest.NewCA(t, materialtest.Options{})
	res := do(http.MethodPost, "/api/v1/certs", map[string]any{"id": "root", "name": "root", "type": "ca-bundle",
		"source": "inline", "certPem": string(ca.CertPEM())})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)

	for _, n := range []string{"one", "two"} {
		require.Equal(t, http.StatusOK, do(http.MethodGet, "/api/v1/certs/root", nil).Status)
		res = do(http.MethodPut, "/api/v1/certs/root", map[string]any{"notes": n})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		require.Equal(t, n, do(http.MethodGet, "/api/v1/certs/root", nil).JSON(t)["notes"])
		items := do(http.MethodGet, "/api/v1/certs?limit=10", nil).JSON(t)["items"].([]any)
		require.Equal(t, n, items[0].(map[string]any)["notes"])
	}

	refs := func() float64 {
		t.Helper()
		res := do(http.MethodGet, "/api/v1/certs/root/references", nil)
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		return res.JSON(t)["total"].(float64)
	}
	require.Zero(t, refs())
	res = do(http.MethodPut, "/api/v1/flows", []byte(`{"flows":[{"id":"f1","nodes":[{"id":"n1","type":"tcp-out","tls":{"caBundleRef":"root"}}]}]}`))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.EqualValues(t, 1, refs(), "a deploy is seen at once by the replica that made it")
	require.Equal(t, http.StatusConflict, do(http.MethodDelete, "/api/v1/certs/root", nil).Status)
	res = do(http.MethodPut, "/api/v1/flows", []byte(`{"flows":[]}`))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Zero(t, refs())
	require.Equal(t, http.StatusNoContent, do(http.MethodDelete, "/api/v1/certs/root", nil).Status)
	require.Equal(t, http.StatusNotFound, do(http.MethodGet, "/api/v1/certs/root", nil).Status)
	require.Empty(t, do(http.MethodGet, "/api/v1/certs?limit=10", nil).JSON(t)["items"])
}

// generationReads counts the reads of a tenant's generation that go through a pool.
type generationReads struct{ n atomic.Int64 }

func (g *generationReads) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.Contains(data.SQL, "tenant_changes") {
		g.n.Add(1)
	}
	return ctx
}

func (g *generationReads) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A read that misses the cache reads the tenant's generation only when it is not known
// already: a tenant of more entries than the cache holds costs one round trip per miss,
// not two. The answer is still fresh, and a change still moves the tenant off the
// generation it was stored under.
func TestMissOfAKnownTenantReadsNoGeneration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.URL(t)
	a := newReplica(t, url, t.TempDir())
	ca := materialtest.NewCA(t, materialtest.Options{})
	for _, id := range []string{"first", "second"} {
		_, err := a.svc.Create(ctx, "acme", pairInput(id, ca.Issue(t, materialtest.Options{})))
		require.NoError(t, err)
		a.awaitChange(t, "acme") // so no notice of it arrives during the reads below
	}

	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	reads := &generationReads{}
	cfg.ConnConfig.Tracer = reads
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := &catalog.Service{Pool: pool, Keys: a.svc.Keys, Logger: logging.Discard(), Cache: a.cache}

	require.Equal(t, "", notes(t, s, "acme", "first"))
	require.EqualValues(t, 1, reads.n.Load(), "the first read learns the generation")
	require.Equal(t, "", notes(t, s, "acme", "second"))
	require.EqualValues(t, 1, reads.n.Load(), "a miss of a known tenant reads no generation")

	_, err = a.svc.Put(ctx, "acme", catalog.Input{ID: "second", Notes: ptr("changed")}, catalog.Precondition{})
	require.NoError(t, err)
	a.awaitChange(t, "acme")
	require.Equal(t, "changed", notes(t, s, "acme", "second"))
	require.EqualValues(t, 2, reads.n.Load(), "after a change the generation is read again")
	require.Equal(t, "", notes(t, s, "acme", "first"))
	require.EqualValues(t, 2, reads.n.Load())
}
