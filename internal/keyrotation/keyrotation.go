// Package keyrotation rotates the master key (`loopze-certs rotate-key`) without ever making
// anything unreadable. The new key is written beside the old one (data/loopze.key.next,
// 0600, synced) before any row changes; from then on every process that loads the data
// directory holds both keys and seals under the new one. Data keys are rewrapped in small
// transactions, each row recording its key ID; the credentials files are re-exported;
// only then does the new key replace the old file. A rotation killed at any point is
// finished by running it again.
package keyrotation

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
)

// ErrStaleSealer means rows kept appearing under an old key while the rotation ran: some
// server does not hold loopze.key.next. Nothing is lost; the old key stays in place.
var ErrStaleSealer = errors.New("rows are still being sealed under an old master key")

// DefaultBatchSize is how many rows one rewrap transaction handles.
const DefaultBatchSize = 500

// Rotator runs rotations over one database and data directory.
type Rotator struct {
	// Pool reaches the database.
	Pool *pgxpool.Pool
	// DataDir holds loopze.key (and loopze.key.next during a rotation) and the files.
	DataDir string
	// Logger receives progress.
	Logger *slog.Logger
	// BatchSize is the rows per rewrap transaction; DefaultBatchSize when zero.
	BatchSize int
	// Passes bounds the rewrap passes made while servers still seal under the old key;
	// 5 when zero.
	Passes int
	// Settle is how long the rotation watches for rows sealed under an old key (by a
	// server that has not reloaded yet) before it retires the old key file; 1s when zero.
	Settle time.Duration
}

// Report says what a rotation did.
type Report struct {
	// Resumed is true when loopze.key.next already existed: a rotation was continued.
	Resumed bool
	// NewKeyID is the key everything is sealed under now.
	NewKeyID string
	// Rewrapped counts the rows (entries, their versions and node secrets) moved to the new key.
	Rewrapped int64
	// Files are the credentials files written under the new key.
	Files []fileexport.Result
}

// stepHook, when set (by tests only), runs after each durable step, so a crash test can
// stop a real rotation between any two of them.
var stepHook func(step string)

func step(name string) {
	if stepHook != nil {
		stepHook(name)
	}
}

func (r *Rotator) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Prepare writes loopze.key.next when it does not exist yet and returns its key ID. It
// changes no row: run it, copy loopze.key.next to every replica's data directory, then
// Rotate. created is false when the file was already there.
func (r *Rotator) Prepare() (keyID string, created bool, err error) {
	next := filepath.Join(r.DataDir, envelope.NextKeyFile)
	if _, err := os.Stat(filepath.Join(r.DataDir, envelope.KeyFile)); err != nil {
		return "", false, fmt.Errorf("prepare rotation: the current key: %w", err)
	}
	key, err := envelope.ReadKeyFile(next)
	if err == nil {
		defer clear(key)
		return envelope.KeyIDOf(key), false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("prepare rotation: %w", err)
	}
	key, err = envelope.GenerateKey()
	if err != nil {
		return "", false, err
	}
	defer clear(key)
	switch err := envelope.WriteKeyFile(next, key); {
	case errors.Is(err, fs.ErrExist):
		return r.Prepare() // another rotation wrote it first: use theirs
	case err != nil:
		return "", false, fmt.Errorf("prepare rotation: %w", err)
	}
	r.logger().Info("new master key written beside the current one; back it up", "path", next, "key_id", envelope.KeyIDOf(key))
	return envelope.KeyIDOf(key), true, nil
}

// Rotate runs (or continues) a rotation to its end.
func (r *Rotator) Rotate(ctx context.Context) (Report, error) {
	var rep Report
	newID, created, err := r.Prepare()
	if err != nil {
		return rep, err
	}
	rep.Resumed, rep.NewKeyID = !created, newID
	step("next-written")

	ring, err := envelope.LoadExisting(r.DataDir, r.Logger)
	if err != nil {
		return rep, fmt.Errorf("rotate master key: %w", err)
	}
	if ring.CurrentKeyID() != newID {
		return rep, fmt.Errorf("rotate master key: the ring's current key is %s, not %s", ring.CurrentKeyID(), newID)
	}
	// Servers that hear this reload their keys: they start sealing under the new key and
	// can open what this rotation rewraps.
	r.announce(ctx)

	passes, settle := r.Passes, r.Settle
	if passes <= 0 {
		passes = 5
	}
	if settle <= 0 {
		settle = time.Second
	}
	for pass := 1; ; pass++ {
		n, err := r.rewrapAll(ctx, ring, newID)
		rep.Rewrapped += n
		if err != nil {
			return rep, err
		}
		left, err := r.remaining(ctx, newID)
		if err != nil {
			return rep, err
		}
		if left == 0 {
			// A server that has not reloaded yet would still seal under the old key.
			// Watch for such rows a while before the old key file is retired.
			select {
			case <-ctx.Done():
				return rep, ctx.Err()
			case <-time.After(settle):
			}
			if left, err = r.remaining(ctx, newID); err != nil {
				return rep, err
			}
			if left == 0 {
				break
			}
		}
		if pass == passes {
			return rep, fmt.Errorf("rotate master key: %d row(s) under an old key after %d passes: %w; copy %s to every replica's data directory (or restart them) and run rotate-key again",
				left, passes, ErrStaleSealer, envelope.NextKeyFile)
		}
		r.logger().Warn("rows were sealed under an old key during the rotation; asking servers to reload", "rows", left)
		r.announce(ctx)
	}

	x := &fileexport.Exporter{Pool: r.Pool, Ring: ring, DataDir: r.DataDir, Logger: r.Logger}
	files, err := x.ExportAll(ctx, false)
	rep.Files = files
	if err != nil {
		return rep, fmt.Errorf("rotate master key: re-export files: %w", err)
	}
	step("exported")

	if err := r.promote(); err != nil {
		return rep, err
	}
	step("promoted")
	r.announce(ctx)
	r.logger().Info("master key rotated", "key_id", newID, "rewrapped", rep.Rewrapped, "files", len(files))
	return rep, nil
}

// announce tells running servers to reload their key rings. It is best effort: servers
// also reload on their reconcile tick and whenever they meet a key they do not hold.
func (r *Rotator) announce(ctx context.Context) {
	if err := repo.AnnounceKeyRotation(ctx, r.Pool); err != nil {
		r.logger().Warn("could not announce the key rotation; servers pick it up at their next reconcile", "err", err)
	}
}

// rewrapAll moves every tenant's rows to newID, batch by batch.
func (r *Rotator) rewrapAll(ctx context.Context, ring *envelope.Ring, newID string) (int64, error) {
	tenants, err := repo.ListTenants(ctx, r.Pool)
	if err != nil {
		return 0, fmt.Errorf("rotate master key: %w", err)
	}
	var total int64
	for _, t := range tenants {
		n, err := r.rewrapTenant(ctx, ring, t.ID, newID)
		total += n
		if err != nil {
			return total, fmt.Errorf("rotate master key: tenant %s: %w", t.ID, err)
		}
	}
	return total, nil
}

func (r *Rotator) rewrapTenant(ctx context.Context, ring *envelope.Ring, tenant, newID string) (int64, error) {
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

// remaining counts rows of every tenant under another key than newID.
func (r *Rotator) remaining(ctx context.Context, newID string) (int64, error) {
	tenants, err := repo.ListTenants(ctx, r.Pool)
	if err != nil {
		return 0, fmt.Errorf("rotate master key: %w", err)
	}
	var left int64
	for _, t := range tenants {
		err := db.InTenant(ctx, r.Pool, t.ID, func(tx pgx.Tx) error {
			usage, err := repo.KeyUsage(ctx, tx, t.ID)
			for id, n := range usage {
				if id != newID {
					left += n
				}
			}
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("rotate master key: count rows left: %w", err)
		}
	}
	return left, nil
}

// promote renames loopze.key.next over loopze.key and syncs the directory: the single
// atomic step that retires the old key file.
func (r *Rotator) promote() error {
	next := filepath.Join(r.DataDir, envelope.NextKeyFile)
	cur := filepath.Join(r.DataDir, envelope.KeyFile)
	if err := durable.Rename(next, cur); err != nil {
		return fmt.Errorf("rotate master key: replace %s: %w", cur, err)
	}
	return nil
}

// KeyIDsInUse lists the master key IDs rows of the database are sealed under, for doctor
// and operators checking that an old key is no longer needed.
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
