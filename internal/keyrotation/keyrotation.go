// Package keyrotation rotates keys (`loopze-certs rotate-key`) without ever making anything
// unreadable, and moves what earlier releases sealed under the master key itself to the
// tenants' own keys.
//
// A master key rotation rewraps the stored tenant keys only, one row per tenant and
// version: the new master key is made first (loopze.key.next beside loopze.key, or a new
// object in the token), every process that reloads holds both, each tenant key is
// rewrapped under the new one, the credentials files are re-exported (their headers carry
// the tenant key wrapped under the master key), and only then is the old key retired.
//
// A tenant key rotation makes the tenant's next key version, which seals from then on,
// rewraps the data keys of the tenant's rows under it in small transactions, and re-exports
// the tenant's file. Every step of either is durable before the next; one killed at any
// point is finished by running it again.
package keyrotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/tenantkey"
)

// ErrStaleSealer means keys kept appearing under an old key while the rotation ran: some
// server does not hold the new key yet. Nothing is lost; the old key stays in place.
var ErrStaleSealer = errors.New("values are still being sealed under an old key")

// DefaultBatchSize is how many rows one rewrap transaction handles.
const DefaultBatchSize = 500

// Rotator runs rotations over one database and data directory.
type Rotator struct {
	// Pool reaches the database.
	Pool *pgxpool.Pool
	// DataDir holds the files.
	DataDir string
	// Keys are the tenant keys under the master keyring.
	Keys *tenantkey.Keys
	// Logger receives progress.
	Logger *slog.Logger
	// BatchSize is the rows per rewrap transaction; DefaultBatchSize when zero.
	BatchSize int
	// Passes bounds the rewrap passes made while servers still seal under an old key;
	// 5 when zero.
	Passes int
	// Settle is how long the rotation watches for values sealed under an old key (by a
	// server that has not reloaded yet) before it retires that key; 1s when zero.
	Settle time.Duration
}

// Report says what a rotation did.
type Report struct {
	// NewKeyID is the master key (a master key rotation) or the tenant's seal key (a
	// tenant key rotation) everything is wrapped under now.
	NewKeyID string
	// TenantKeys counts the stored tenant key versions rewrapped under the new master key.
	TenantKeys int
	// Rewrapped counts the rows (entries, their versions and node secrets) moved to a
	// tenant's current key.
	Rewrapped int64
	// Files are the credentials files written under the new keys.
	Files []fileexport.Result
	// Took is how long the parts of a master key rotation took.
	Took Took
}

// Took splits the time a master key rotation took.
type Took struct {
	// Migrate is Migrate: the search for rows under a master key itself (or an older
	// tenant key), and their move to their tenant's current key.
	Migrate time.Duration
	// TenantKeys is the rewrap of the stored tenant keys, and the counts of those left
	// under an old master key after the watch.
	TenantKeys time.Duration
	// Export is the re-export of the credentials files.
	Export time.Duration
	// Settle is what the rotation waited, beyond the re-export, for servers that had not
	// reloaded yet to show themselves.
	Settle time.Duration
}

// stepHook, when set (by tests only), runs after each durable step, so a crash test can
// stop a real rotation between any two of them.
var stepHook func(step string)

// stepMu serializes the hook: tenants are handled on several goroutines at once.
var stepMu sync.Mutex

func step(name string) {
	if stepHook != nil {
		stepMu.Lock()
		defer stepMu.Unlock()
		stepHook(name)
	}
}

// eachTenant calls fn for every tenant, as many at once as an export of all tenants runs
// (fileexport.AllAtOnce): each call is a few short transactions of one tenant, holding
// one pool connection at a time, and mostly waits for the database's answers. It stops
// starting calls at the first error, cancels the context of those under way, and returns
// that error (or ctx's, when it ended first).
func eachTenant(ctx context.Context, tenants []repo.Tenant, fn func(ctx context.Context, tenant string) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fileexport.AllAtOnce())
	for _, t := range tenants {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return fn(gctx, t.ID) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (r *Rotator) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

func (r *Rotator) passesAndSettle() (int, time.Duration) {
	passes, settle := r.Passes, r.Settle
	if passes <= 0 {
		passes = 5
	}
	if settle <= 0 {
		settle = time.Second
	}
	return passes, settle
}

// Rotate rotates the master key, or continues a rotation under way, to its end: O(tenants).
func (r *Rotator) Rotate(ctx context.Context) (Report, error) {
	var rep Report
	master := r.Keys.Master
	next, err := master.Next()
	if err != nil {
		return rep, fmt.Errorf("rotate master key: %w", err)
	}
	rep.NewKeyID = next.ID()
	step("next-written")
	// Servers that hear this reload their keys: they wrap under the new key and can
	// unwrap what this rotation rewraps.
	r.announce(ctx)

	// Rows an earlier release sealed under the master key itself must move to their
	// tenant's key before any master key is retired.
	t := time.Now()
	n, err := r.Migrate(ctx)
	rep.Took.Migrate = time.Since(t)
	rep.Rewrapped += n
	if err != nil {
		return rep, err
	}

	// A server that has not reloaded yet would still wrap a new tenant key under the old
	// master key. The rotation watches for that a while before the old key is retired, and
	// re-exports the files meanwhile: their headers carry the tenant keys as just
	// rewrapped, and an export longer than the watch adds no wait to it.
	x := &fileexport.Exporter{Pool: r.Pool, Keys: r.Keys, DataDir: r.DataDir, Logger: r.Logger}
	rep.Took.Settle, err = r.untilSettled(ctx, func(rewrap bool) (int64, error) {
		t := time.Now()
		moved, left, err := r.rewrapTenantKeys(ctx, rep.NewKeyID, rewrap)
		rep.TenantKeys += moved
		rep.Took.TenantKeys += time.Since(t)
		return int64(left), err
	}, func() error {
		step("tenant-keys-rewrapped")
		t := time.Now()
		files, err := x.ExportAll(ctx, false)
		rep.Files = mergeFiles(rep.Files, files)
		rep.Took.Export += time.Since(t)
		if err != nil {
			return fmt.Errorf("rotate master key: re-export files: %w", err)
		}
		step("exported")
		return nil
	}, func(left int64, passes int) error {
		return fmt.Errorf("rotate master key: %d tenant key(s) under an old master key after %d passes: %w; give every replica the new key (or restart them) and run rotate-key again",
			left, passes, ErrStaleSealer)
	}, "tenant keys were wrapped under an old master key during the rotation; asking servers to reload")
	if err != nil {
		return rep, err
	}

	for _, id := range master.IDs() {
		if id == rep.NewKeyID {
			continue
		}
		if err := master.Retire(id); err != nil {
			return rep, fmt.Errorf("rotate master key: retire %s: %w", id, err)
		}
	}
	if r.Keys.Legacy != nil {
		if err := r.Keys.Legacy.Reload(); err != nil {
			return rep, fmt.Errorf("rotate master key: reload the key files: %w", err)
		}
		for _, id := range r.Keys.Legacy.KeyIDs() {
			if id != rep.NewKeyID && id != r.Keys.Legacy.CurrentKeyID() {
				_ = r.Keys.Legacy.Forget(id)
			}
		}
	}
	step("promoted")
	r.announce(ctx)
	r.logger().Info("master key rotated", "key_id", rep.NewKeyID, "tenant_keys", rep.TenantKeys, "rows_moved", rep.Rewrapped,
		"files", len(rep.Files), "migrate", rep.Took.Migrate, "tenant_keys_took", rep.Took.TenantKeys,
		"export", rep.Took.Export, "settle", rep.Took.Settle)
	return rep, nil
}

// mergeFiles is the results of a pass over the files after those of the passes before it:
// a file any pass wrote counts as written.
func mergeFiles(before, pass []fileexport.Result) []fileexport.Result {
	written := map[string]bool{}
	for _, f := range before {
		if f.Written {
			written[f.Tenant] = true
		}
	}
	for i := range pass {
		pass[i].Written = pass[i].Written || written[pass[i].Tenant]
	}
	return pass
}

// rewrapTenantKeys rewraps every tenant's stored keys under the current master key newID
// (only counts them, without rewrap), several tenants at once; it returns how many it
// moved and how many are left under another (a server wrapped a new one under an old key
// meanwhile).
func (r *Rotator) rewrapTenantKeys(ctx context.Context, newID string, rewrap bool) (moved, left int, err error) {
	if cur := r.Keys.Master.Current().ID(); cur != newID {
		return 0, 0, fmt.Errorf("rotate master key: the current master key is %s, not %s", cur, newID)
	}
	tenants, err := repo.ListTenants(ctx, r.Pool)
	if err != nil {
		return 0, 0, fmt.Errorf("rotate master key: %w", err)
	}
	var nMoved, nLeft atomic.Int64
	err = eachTenant(ctx, tenants, func(ctx context.Context, tenant string) error {
		if rewrap {
			n := 0
			err := db.InTenant(ctx, r.Pool, tenant, func(tx pgx.Tx) error {
				var err error
				if n, err = r.Keys.Rewrap(ctx, tx, tenant); err != nil || n == 0 {
					return err
				}
				return audit.Record(ctx, tx, audit.Event{Tenant: tenant, Action: audit.KeyRotate, Target: "tenant",
					Detail: map[string]any{"masterKeyId": newID, "tenantKeysRewrapped": n}})
			})
			if err != nil {
				return fmt.Errorf("rotate master key: tenant %s: %w", tenant, err)
			}
			r.Keys.Forget(tenant)
			nMoved.Add(int64(n))
			if n > 0 {
				step("tenant-key-rewrapped")
			}
		}
		rows, err := repo.TenantKeys(ctx, r.Pool, tenant)
		if err != nil {
			return err
		}
		for _, k := range rows {
			if k.MasterKeyID != newID {
				nLeft.Add(1)
			}
		}
		return nil
	})
	return int(nMoved.Load()), int(nLeft.Load()), err
}

// RotateTenant makes tenant's next key version, moves its rows to it and re-exports its
// file. Run again after a kill, it makes one more version and moves every row to that one;
// serve's Migrate at start finishes an interrupted move as well.
func (r *Rotator) RotateTenant(ctx context.Context, tenant string) (Report, error) {
	var rep Report
	if _, err := r.Keys.Rotate(ctx, tenant); err != nil {
		return rep, fmt.Errorf("rotate the key of %s: %w", tenant, err)
	}
	step("tenant-version-made")
	r.announce(ctx)
	return r.finishTenant(ctx, tenant, rep)
}

// finishTenant moves tenant's rows to its current key, watching for rows still sealed
// under an older one by a server that has not reloaded, and re-exports its file.
func (r *Rotator) finishTenant(ctx context.Context, tenant string, rep Report) (Report, error) {
	_, err := r.untilSettled(ctx, func(rewrap bool) (int64, error) {
		ring, err := r.Keys.Ring(ctx, tenant)
		if err != nil {
			return 0, err
		}
		rep.NewKeyID = ring.CurrentKeyID()
		if rewrap {
			n, err := r.rewrapTenant(ctx, ring, tenant)
			rep.Rewrapped += n
			if err != nil {
				return 0, fmt.Errorf("rotate the key of %s: %w", tenant, err)
			}
		}
		return r.remaining(ctx, tenant, rep.NewKeyID)
	}, nil, func(left int64, passes int) error {
		return fmt.Errorf("rotate the key of %s: %d row(s) under an older key after %d passes: %w", tenant, left, passes, ErrStaleSealer)
	}, "rows were sealed under an older key of the tenant during the rotation; asking servers to reload")
	if err != nil {
		return rep, err
	}
	x := &fileexport.Exporter{Pool: r.Pool, Keys: r.Keys, DataDir: r.DataDir, Logger: r.Logger}
	res, err := x.ExportTenant(ctx, tenant, false)
	if err != nil {
		return rep, fmt.Errorf("rotate the key of %s: re-export: %w", tenant, err)
	}
	rep.Files = append(rep.Files, res)
	step("exported")
	r.logger().Info("tenant key rotated", "tenant", tenant, "key_id", rep.NewKeyID, "rows_moved", rep.Rewrapped)
	return rep, nil
}

// Migrate moves every row still sealed under another key than its tenant's current one
// (under the master key itself, as releases before tenant keys sealed them, or under an
// older tenant key version) to that tenant's current key, making the tenant's key first
// when it has none, several tenants at once (each in batches, one pool connection at a
// time). It is what `serve` runs at start, in the background: every row stays readable
// throughout, and a run killed at any point is finished by the next.
func (r *Rotator) Migrate(ctx context.Context) (int64, error) {
	tenants, err := repo.ListTenants(ctx, r.Pool)
	if err != nil {
		return 0, fmt.Errorf("move rows to tenant keys: %w", err)
	}
	var total atomic.Int64
	err = eachTenant(ctx, tenants, func(ctx context.Context, tenant string) error {
		ring, err := r.Keys.Ring(ctx, tenant)
		if err != nil {
			return fmt.Errorf("move rows to tenant keys: tenant %s: %w", tenant, err)
		}
		n, err := r.rewrapTenant(ctx, ring, tenant)
		total.Add(n)
		if err != nil {
			return fmt.Errorf("move rows to tenant keys: tenant %s: %w", tenant, err)
		}
		return nil
	})
	return total.Load(), err
}

// untilSettled moves what is left under an older key to the current one (move with rewrap
// set, returning how much is still left) until nothing is, then runs during (when set) and
// watches for the rest of a while (move without rewrap only counts) before trusting it: a
// server that has not reloaded yet would still seal or wrap under the old key. Between
// passes it asks servers to reload, logging warn; after the last pass it gives up with
// stale's error. It returns how long it waited beyond move and during.
func (r *Rotator) untilSettled(ctx context.Context, move func(rewrap bool) (left int64, err error), during func() error,
	stale func(left int64, passes int) error, warn string) (waited time.Duration, err error) {
	passes, settle := r.passesAndSettle()
	for pass := 1; ; pass++ {
		left, err := move(true)
		if err != nil {
			return waited, err
		}
		if left == 0 {
			watch := time.Now()
			if during != nil {
				if err := during(); err != nil {
					return waited, err
				}
			}
			if wait := settle - time.Since(watch); wait > 0 {
				select {
				case <-ctx.Done():
					return waited, ctx.Err()
				case <-time.After(wait):
				}
				waited += wait
			}
			if left, err = move(false); err != nil {
				return waited, err
			}
			if left == 0 {
				return waited, nil
			}
		}
		if pass == passes {
			return waited, stale(left, passes)
		}
		r.logger().Warn(warn, "left", left)
		r.announce(ctx)
	}
}

// announce tells running servers to reload their key rings. It is best effort: servers
// also reload on their reconcile tick and whenever they meet a key they do not hold.
func (r *Rotator) announce(ctx context.Context) {
	if err := repo.AnnounceKeyRotation(ctx, r.Pool); err != nil {
		r.logger().Warn("could not announce the key rotation; servers pick it up at their next reconcile", "err", err)
	}
}

// rewrapTenant moves tenant's rows not sealed under ring's current key to it, in batches
// of BatchSize rows, each in a transaction of its own that also records what it moved.
func (r *Rotator) rewrapTenant(ctx context.Context, ring *envelope.Ring, tenant string) (int64, error) {
	newID := ring.CurrentKeyID()
	batch := r.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	var total int64
	for {
		n := 0
		err := db.InTenant(ctx, r.Pool, tenant, func(tx pgx.Tx) error {
			n = 0
			entries, err := repo.EntriesToRewrap(ctx, tx, tenant, newID, batch)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if e.Sealed, err = sealing.RewrapPair(ring, sealing.Place{Tenant: tenant, EntryID: e.ID}, e.Sealed); err != nil {
					return err
				}
			}
			if err := repo.RewrapEntries(ctx, tx, entries); err != nil {
				return err
			}
			n = len(entries)
			if n == batch {
				return recordRotation(ctx, tx, tenant, newID, n)
			}
			versions, err := rewrapVersions(ctx, tx, ring, tenant, newID, batch-n)
			if err != nil {
				return err
			}
			n += versions
			if n == batch {
				return recordRotation(ctx, tx, tenant, newID, n)
			}
			secrets, err := repo.NodeSecretsToRewrap(ctx, tx, tenant, newID, batch-n)
			if err != nil {
				return err
			}
			for i := range secrets {
				s := &secrets[i]
				if s.Sealed, err = ring.Rewrap(s.Sealed, sealing.NodeSecret(tenant, s.NodeID, s.Name)); err != nil {
					return fmt.Errorf("rewrap node %s credential %s: %w", s.NodeID, s.Name, err)
				}
				s.KeyID = newID
			}
			n += len(secrets)
			if err := repo.RewrapNodeSecrets(ctx, tx, tenant, secrets); err != nil {
				return err
			}
			return recordRotation(ctx, tx, tenant, newID, n)
		})
		if err != nil {
			return total, err
		}
		total += int64(n)
		if n == 0 {
			return total, nil
		}
		step("batch-committed")
	}
}

// remaining counts tenant's rows under another key than newID.
func (r *Rotator) remaining(ctx context.Context, tenant, newID string) (int64, error) {
	var left int64
	err := db.InTenant(ctx, r.Pool, tenant, func(tx pgx.Tx) error {
		usage, err := repo.KeyUsage(ctx, tx, tenant)
		for id, n := range usage {
			if id != newID {
				left += n
			}
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("count rows left of %s: %w", tenant, err)
	}
	return left, nil
}

// KeyIDsInUse lists the key IDs rows of the database are sealed under, for operators
// checking that an old key is no longer needed.
func KeyIDsInUse(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	tenants, err := repo.ListTenants(ctx, pool)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, t := range tenants {
		err := db.InTenant(ctx, pool, t.ID, func(tx pgx.Tx) error {
			usage, err := repo.KeyUsage(ctx, tx, t.ID)
			for id := range usage {
				seen[id] = true
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}
