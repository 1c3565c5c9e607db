package keyrotation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
)

// LockKey is the PostgreSQL advisory lock (session level, bigint form) a replica holds
// while it runs a scheduled master key rotation, so that of replicas finding it due at
// once one rotates and the others skip. It is "LOOPZEKR" in ASCII, clear of goose's
// migration lock (4097083626); nothing else in the store takes it.
const LockKey int64 = 0x4c4f4f505a454b52

// ErrNotShared means a live replica reads its master keys from another store than this
// one: a rotation here would rewrap every tenant key under a key that replica never sees.
var ErrNotShared = errors.New("replicas do not share one master key store")

// Outcome says what a check of the schedule did.
type Outcome int

// The outcomes of Check.
const (
	// Off: no schedule; the check only registered this replica's keyring.
	Off Outcome = iota
	// NotDue: the last rotation is more recent than the schedule asks.
	NotDue
	// Busy: another replica holds the lock, and is rotating.
	Busy
	// Refused: a live replica does not share this keyring (ErrNotShared).
	Refused
	// Waiting: the next key is made, and some live replica does not hold it yet.
	Waiting
	// Rotated: a rotation ran to its end and was recorded.
	Rotated
	// Failed: the rotation stopped with an error; the next check continues it.
	Failed
)

// String names the outcome in logs.
func (o Outcome) String() string {
	return [...]string{"off", "not due", "busy", "refused", "waiting", "rotated", "failed"}[o]
}

// Scheduler rotates the master key on a schedule anchored in the database, once across
// replicas. Each check costs one round trip: it registers what this replica's keyring
// holds (master_key_holders) and reads when the last rotation completed. When one is due,
// the replica that takes LockKey (on a connection of its own) reads again, checks that
// every live replica reads the same key store, makes the next key and waits until every
// live replica holds it, then runs Rotator.Rotate and records the time; the others skip.
// The time is written only once Rotate returned without error, so a rotation killed at
// any step is still due at the next check of any replica, whose Rotate finishes it.
//
// Every serving replica runs one, with or without a schedule: a replica that rotates must
// see the keyrings of those that do not. One goroutine calls Check or Run.
type Scheduler struct {
	// Rotator runs the rotation; Rotator.Keys.Master is this replica's keyring.
	Rotator *Rotator
	// Every is the schedule: a rotation is due once Every has passed since the last one
	// completed, or since a server of this release first started. Zero only registers.
	Every time.Duration
	// LockURL reaches the database directly, or through a session pooler, for the
	// advisory lock: never through a transaction pooler (see db.TryLock).
	LockURL string
	// Store names where this replica's keyring is read from (StoreID).
	Store string
	// Label names this replica in logs, its own and other replicas': host and data
	// directory.
	Label string
	// Interval is the time between checks; CheckInterval(Every) when zero.
	Interval time.Duration
	// Now is the clock the schedule is read with; time.Now when nil.
	Now func() time.Time

	once    sync.Once
	replica string
	checks  int
	// rotated, when set (by tests only), runs after Rotate returned and before the
	// rotation is recorded.
	rotated func()
}

// CheckInterval is the time between checks for a schedule of every: a tenth of it, at
// least a minute and at most an hour (an hour without a schedule, when checks only
// register the keyring).
func CheckInterval(every time.Duration) time.Duration {
	if every <= 0 {
		return time.Hour
	}
	return min(max(every/10, time.Minute), time.Hour)
}

func (s *Scheduler) interval() time.Duration {
	if s.Interval > 0 {
		return s.Interval
	}
	return CheckInterval(s.Every)
}

func (s *Scheduler) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Scheduler) logger() *slog.Logger { return s.Rotator.logger() }

// holder is this replica's row: a random ID, made once, and what its keyring holds now.
// The keyring is reloaded first, so a key another replica made in a shared store is
// reported as soon as this replica checks.
func (s *Scheduler) holder() repo.KeyHolder {
	s.once.Do(func() {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		s.replica = hex.EncodeToString(b)
	})
	master := s.Rotator.Keys.Master
	if err := master.Reload(); err != nil {
		s.logger().Warn("reload the master keyring before the key schedule's check", "err", err)
	}
	label := s.Label
	if label == "" {
		label, _ = os.Hostname()
	}
	return repo.KeyHolder{Replica: s.replica, Label: label, Store: s.Store,
		CurrentKeyID: master.Current().ID(), KeyIDs: master.IDs()}
}

// register refreshes this replica's row and reads the schedule and the other live holders.
func (s *Scheduler) register(ctx context.Context, now time.Time) (me repo.KeyHolder, last time.Time, others []repo.KeyHolder, err error) {
	me = s.holder()
	// A lease of three intervals outlives a late check, and expires soon enough after a
	// replica is gone for good.
	last, others, err = repo.CheckKeySchedule(ctx, s.Rotator.Pool, me, 3*s.interval(), now)
	if err != nil {
		return me, last, nil, fmt.Errorf("key schedule: %w", err)
	}
	return me, last, others, nil
}

// Check checks the schedule once, and rotates when it is due and this replica may (see
// Scheduler). Refused comes with an error wrapping ErrNotShared, Failed with the
// rotation's error; the other outcomes with none.
func (s *Scheduler) Check(ctx context.Context) (Outcome, error) {
	now := s.now()
	s.checks++
	me, last, others, err := s.register(ctx, now)
	if err != nil {
		return Failed, err
	}
	if s.Every <= 0 {
		return Off, nil
	}
	if now.Sub(last) < s.Every {
		if err := shared(me, others); err != nil && s.checks == 1 {
			s.logger().Error("the scheduled master key rotation will be refused when it is due", "err", err)
		}
		return NotDue, nil
	}
	if s.LockURL == "" {
		// An empty URL would reach whatever the PG* variables name.
		return Failed, errors.New("key schedule: no database URL for the rotation lock")
	}
	lock, held, err := db.TryLock(ctx, s.LockURL, LockKey)
	if err != nil {
		return Failed, fmt.Errorf("key schedule: %w", err)
	}
	if !held {
		s.logger().Debug("another replica holds the key rotation lock; skipping")
		return Busy, nil
	}
	defer func() {
		if err := lock.Unlock(ctx); err != nil {
			s.logger().Warn("release the key rotation lock; it is released when its connection ends", "err", err)
		}
	}()
	// Read again under the lock: a replica that held it may have finished a rotation
	// since the first read.
	if me, last, others, err = s.register(ctx, now); err != nil {
		return Failed, err
	}
	if now.Sub(last) < s.Every {
		return NotDue, nil
	}
	if err := shared(me, others); err != nil {
		return Refused, err
	}
	next, err := s.Rotator.Keys.Master.Next()
	if err != nil {
		return Failed, fmt.Errorf("scheduled master key rotation: %w", err)
	}
	s.Rotator.announce(ctx)
	if _, _, others, err = s.register(ctx, now); err != nil {
		return Failed, err
	}
	if missing := lacking(others, next.ID()); len(missing) > 0 {
		s.logger().Warn("scheduled master key rotation waits until every replica holds the new master key; each loads it at its next check. "+
			"A replica that never does reads another key store: give it the key, or stop it",
			"key_id", next.ID(), "replicas", missing)
		return Waiting, nil
	}

	s.logger().Info("scheduled master key rotation started", "key_id", next.ID(), "last_rotated", last, "every", s.Every.String())
	began := time.Now()
	rep, err := s.Rotator.Rotate(ctx)
	if err != nil {
		return Failed, fmt.Errorf("scheduled master key rotation to %s: %w", next.ID(), err)
	}
	if s.rotated != nil {
		s.rotated()
	}
	if err := MarkRotated(ctx, s.Rotator.Pool, rep.NewKeyID, s.now()); err != nil {
		// The rotation is done; the next check finds it due, runs Rotate again (which
		// then starts another rotation), and records that one.
		return Failed, fmt.Errorf("scheduled master key rotation to %s: %w", rep.NewKeyID, err)
	}
	s.logger().Info("scheduled master key rotation done", "key_id", rep.NewKeyID, "tenant_keys_rewrapped", rep.TenantKeys,
		"rows_moved", rep.Rewrapped, "files", len(rep.Files), "duration", time.Since(began).Round(time.Millisecond).String())
	if _, _, _, err := s.register(ctx, s.now()); err != nil {
		s.logger().Warn("register the master keyring after the rotation", "err", err)
	}
	return Rotated, nil
}

// MarkRotated records that a master key rotation to keyID completed at at: the schedule
// counts from it. rotate-key records its rotations too, so one run by hand postpones the
// next scheduled one.
func MarkRotated(ctx context.Context, pool *pgxpool.Pool, keyID string, at time.Time) error {
	if err := repo.MasterRotated(ctx, pool, at, keyID); err != nil {
		return fmt.Errorf("key schedule: %w", err)
	}
	return nil
}

// shared says why me may not rotate with others live: one reads another key store, or
// wraps under a key me does not hold (it rotated in a store me does not see).
func shared(me repo.KeyHolder, others []repo.KeyHolder) error {
	var why []string
	for _, h := range others {
		switch {
		case h.Store != me.Store:
			why = append(why, fmt.Sprintf("%s reads its master keys from %s, this replica from %s", h.Label, h.Store, me.Store))
		case !slices.Contains(me.KeyIDs, h.CurrentKeyID):
			why = append(why, fmt.Sprintf("%s wraps under master key %s, which this replica does not hold", h.Label, h.CurrentKeyID))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; every replica must read one key store (one data directory on shared storage, or one PKCS#11 token) "+
		"for the master key to rotate on a schedule; rotate by hand instead (rotate-key --prepare, on several replicas)",
		ErrNotShared, strings.Join(why, "; "))
}

// lacking names the holders that do not hold key id.
func lacking(others []repo.KeyHolder, id string) []string {
	var names []string
	for _, h := range others {
		if !slices.Contains(h.KeyIDs, id) {
			names = append(names, h.Label)
		}
	}
	return names
}

// Run checks at once and then every interval until ctx ends, logging what each check
// found (an ERROR when a due rotation failed or was refused: the next check tries again),
// then drops this replica's row.
func (s *Scheduler) Run(ctx context.Context) {
	t := time.NewTicker(s.interval())
	defer t.Stop()
	for {
		outcome, err := s.Check(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil && s.Every <= 0:
			s.logger().Warn("register the master keyring for the key schedule; the next check tries again", "err", err)
		case err != nil:
			s.logger().Error("scheduled master key rotation "+outcome.String()+"; the next check tries again",
				"err", err, "next_check_in", s.interval().String())
		case outcome == Busy:
			s.logger().Info("another replica is rotating the master key")
		}
		select {
		case <-ctx.Done():
			s.drop(ctx)
			return
		case <-t.C:
		}
	}
}

// drop deletes this replica's row, so rotations elsewhere stop waiting for it.
func (s *Scheduler) drop(ctx context.Context) {
	if s.replica == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := repo.DropKeyHolder(ctx, s.Rotator.Pool, s.replica); err != nil {
		s.logger().Warn("drop this replica from the master key holders; its lease runs out by itself", "err", err)
	}
}
