package keyrotation

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
)

// envNow is the instant the schedule helper's clock reads, RFC 3339.
const envNow = "LOOPZE_KEYROTATION_NOW"

// clock is the schedule's fake clock, shared by the replicas of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// storeOf is the key store ID of a replica whose data directory is dir.
func storeOf(t testing.TB, dir string) string {
	t.Helper()
	store, err := StoreID(tenantkeytest.Source(t, dir))
	require.NoError(t, err)
	return store
}

// replica is a server on dir with its own keyring, checking the schedule every hour on c.
func (f *fixture) replica(t *testing.T, name, dir string, c *clock) *Scheduler {
	t.Helper()
	keys, err := openKeys(f.pool, dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = keys.Master.Close() })
	r := &Rotator{Pool: f.pool, DataDir: dir, Keys: keys, BatchSize: 3, Settle: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	return &Scheduler{Rotator: r, Every: time.Hour, LockURL: f.url, Store: storeOf(t, dir), Label: name, Now: c.Now}
}

// check runs one check that must end as want.
func check(t *testing.T, s *Scheduler, want Outcome) {
	t.Helper()
	got, err := s.Check(context.Background())
	require.NoError(t, err, "%s", s.Label)
	require.Equal(t, want, got, "%s", s.Label)
}

// masterRotations lists, per tenant, the master key IDs its key.rotate records name: one
// per master key rotation that rewrapped the tenant's keys.
func (f *fixture) masterRotations(t *testing.T) map[string][]string {
	t.Helper()
	ctx := context.Background()
	out := map[string][]string{}
	for _, tenant := range tenants {
		require.NoError(t, db.InTenant(ctx, f.pool, tenant, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT detail FROM audit_pending WHERE tenant_id = $1 AND action = 'key.rotate'
				UNION ALL SELECT detail FROM audit_log WHERE tenant_id = $1 AND action = 'key.rotate'`, tenant)
			if err != nil {
				return err
			}
			details, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			for _, d := range details {
				var detail map[string]any
				if err := json.Unmarshal([]byte(d), &detail); err != nil {
					return err
				}
				if id, ok := detail["masterKeyId"].(string); ok {
					out[tenant] = append(out[tenant], id)
				}
			}
			return nil
		}))
	}
	return out
}

// lastRotation is the schedule's row: when the last rotation completed, and to which key.
func (f *fixture) lastRotation(t *testing.T) (time.Time, string) {
	t.Helper()
	var at time.Time
	var id string
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT rotated_at, key_id FROM master_key_schedule`).Scan(&at, &id))
	return at, id
}

// requireMasterKeys checks that a server starting now holds exactly ids, and that every
// tenant key is wrapped under the first of them.
func (f *fixture) requireMasterKeys(t *testing.T, ids ...string) {
	t.Helper()
	fresh, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer fresh.Master.Close()
	require.ElementsMatch(t, ids, fresh.Master.IDs())
	for _, tenant := range tenants {
		rows, err := repo.TenantKeys(context.Background(), f.pool, tenant)
		require.NoError(t, err)
		for _, k := range rows {
			require.Equal(t, ids[0], k.MasterKeyID, "%s version %d", tenant, k.Version)
		}
	}
}

// currentMaster is the master key a server starting on dir wraps under.
func currentMaster(t *testing.T, f *fixture, dir string) string {
	t.Helper()
	keys, err := openKeys(f.pool, dir)
	require.NoError(t, err)
	defer keys.Master.Close()
	return keys.Master.Current().ID()
}

// TestScheduleRotatesOnceAcrossReplicas: two replicas sharing one data directory and one
// database check the schedule. Before it is due nothing happens; when it is due exactly
// one rotates, while the other finds the lock taken (even in the window between the end
// of the rotation and its record, when the schedule still reads due), and the master key
// changes once, with one key.rotate record per tenant.
func TestScheduleRotatesOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	f := setup(t, false)
	c := &clock{t: time.Now().UTC().Truncate(time.Microsecond)}
	start := c.Now()
	a, b := f.replica(t, "a", f.dataDir, c), f.replica(t, "b", f.dataDir, c)
	old := currentMaster(t, f, f.dataDir)

	// The first check of a fresh install anchors the schedule: due an hour from now.
	check(t, a, NotDue)
	check(t, b, NotDue)
	c.Advance(time.Hour - time.Second)
	check(t, a, NotDue)
	check(t, b, NotDue)
	at, _ := f.lastRotation(t)
	require.True(t, start.Equal(at), "anchored at the first check: %s, want %s", at, start)
	f.requireMasterKeys(t, old)
	require.Empty(t, f.masterRotations(t))
	if f.masterKeySource(t).Kind == masterkey.KindFile {
		_, err := os.Stat(filepath.Join(f.dataDir, envelope.NextKeyFile))
		require.ErrorIs(t, err, fs.ErrNotExist, "nothing is made before the rotation is due")
	}

	c.Advance(time.Second)
	// a makes the next key, which b has not reported holding yet: a waits for it.
	check(t, a, Waiting)
	next := currentMaster(t, f, f.dataDir)
	require.NotEqual(t, old, next)
	// b reports it and rotates; a, checking while b has rotated but not yet recorded it,
	// finds the lock taken instead of starting a second rotation.
	inWindow := 0
	b.rotated = func() {
		inWindow++
		check(t, a, Busy)
	}
	check(t, b, Rotated)
	require.Equal(t, 1, inWindow)
	check(t, a, NotDue)
	check(t, b, NotDue)

	f.requireMasterKeys(t, next)
	f.requireAllReadable(t, "after the scheduled rotation")
	at, id := f.lastRotation(t)
	require.True(t, c.Now().Equal(at), "recorded at the rotation: %s, want %s", at, c.Now())
	require.Equal(t, next, id)
	rotations := f.masterRotations(t)
	for _, tenant := range tenants {
		require.Equal(t, []string{next}, rotations[tenant], "one rewrap of %s's keys", tenant)
	}

	// The next rotation is due an hour after the last one completed, not after the anchor.
	c.Advance(time.Hour - time.Second)
	check(t, a, NotDue)
}

// runScheduleHelper is the crash helper's schedule: one check at the instant envNow
// names, as a replica that finds the rotation due. Its lease is a millisecond, so once
// killed it stands for a replica gone for good rather than one that will check again.
func runScheduleHelper(ctx context.Context, r *Rotator) error {
	now, err := time.Parse(time.RFC3339Nano, os.Getenv(envNow))
	if err != nil {
		return err
	}
	src, err := masterkey.Locate(tenantkeytest.URIOf(r.DataDir), r.DataDir, os.Getenv)
	if err != nil {
		return err
	}
	store, err := StoreID(src)
	if err != nil {
		return err
	}
	s := &Scheduler{Rotator: r, Every: time.Hour, LockURL: os.Getenv(envDB), Store: store, Label: "helper",
		Interval: time.Millisecond, Now: func() time.Time { return now }}
	outcome, err := s.Check(ctx)
	if err == nil && outcome != Rotated {
		err = fmt.Errorf("the check ended %s, not rotated", outcome)
	}
	return err
}

// awaitLockReleased waits until no session holds LockKey. A killed holder's session ends,
// and its lock with it, once its backend notices the closed connection, a moment after
// the kill; waiting for the lock (and giving it back) awaits exactly that.
func (f *fixture) awaitLockReleased(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, LockKey)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, LockKey)
	require.NoError(t, err)
}

// TestScheduledRotationKilledIsFinishedByTheNextCheck kills a replica (SIGKILL) in the
// middle of a scheduled rotation, right after each of its steps in turn: the next check
// of a replica starting after it finds the rotation still due (its time was not written),
// finishes it, and records it; everything decrypts throughout.
func TestScheduledRotationKilledIsFinishedByTheNextCheck(t *testing.T) {
	t.Parallel()
	f := setup(t, false)
	c := &clock{t: time.Now().UTC().Truncate(time.Microsecond)}
	s := f.replica(t, "survivor", f.dataDir, c)
	check(t, s, NotDue)
	exe, err := os.Executable()
	require.NoError(t, err)
	for _, step := range []string{"next-written", "tenant-key-rewrapped", "tenant-keys-rewrapped", "exported"} {
		before, _ := f.lastRotation(t)
		old := currentMaster(t, f, f.dataDir)
		c.Advance(time.Hour)
		// The survivor stands for a replica that starts after the kill: not yet live
		// while the helper rotates, so the helper need not wait for it.
		s.drop(context.Background())

		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envHelper+"=schedule", envDB+"="+f.url, envDir+"="+f.dataDir,
			envKillAt+"="+step, envNow+"="+c.Now().Format(time.RFC3339Nano))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "output: %s; stderr: %s", out, stderr.String())
		require.Equal(t, "signal: killed", exit.Error(), "%s: the helper must die by the kill: %s", step, stderr.String())
		lines := strings.Fields(string(out))
		require.Equal(t, step, lines[len(lines)-1])
		at, _ := f.lastRotation(t)
		require.True(t, before.Equal(at), "%s: a killed rotation is not recorded", step)
		f.requireAllReadable(t, "after a kill right after "+step)
		f.awaitLockReleased(t)

		check(t, s, Rotated)
		next := currentMaster(t, f, f.dataDir)
		require.NotEqual(t, old, next, "%s", step)
		f.requireMasterKeys(t, next)
		f.requireAllReadable(t, "after the check that finished the rotation killed after "+step)
		at, id := f.lastRotation(t)
		require.True(t, c.Now().Equal(at), "%s", step)
		require.Equal(t, next, id)
		check(t, s, NotDue)
	}
}

// TestScheduleRefusesReplicasWithKeyringsOfTheirOwn: replicas that each keep a copy of one
// loopze.key in a data directory of their own (docs/ha.md's layout) do not see the next
// key one of them writes. A scheduled rotation there would leave the others unable to open
// any tenant key; it is refused before anything is made, also when the other replica
// has no schedule of its own, and runs once that replica is gone.
func TestScheduleRefusesReplicasWithKeyringsOfTheirOwn(t *testing.T) {
	t.Parallel()
	f := setup(t, false)
	if f.masterKeySource(t).Kind != masterkey.KindFile {
		t.Skip("replicas with directories of their own share one token")
	}
	ctx := context.Background()
	otherDir := t.TempDir()
	key, err := os.ReadFile(filepath.Join(f.dataDir, envelope.KeyFile))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(otherDir, envelope.KeyFile), key, 0o600))
	c := &clock{t: time.Now().UTC().Truncate(time.Microsecond)}
	a, b := f.replica(t, "a", f.dataDir, c), f.replica(t, "b", otherDir, c)
	b.Every = 0 // b rotates nothing; it only says which keyring it holds
	old := currentMaster(t, f, f.dataDir)
	require.Equal(t, old, currentMaster(t, f, otherDir), "one key, copied")
	require.NotEqual(t, a.Store, b.Store)

	check(t, a, NotDue)
	check(t, b, Off)
	c.Advance(time.Hour)
	outcome, err := a.Check(ctx)
	require.Equal(t, Refused, outcome)
	require.ErrorIs(t, err, ErrNotShared)
	require.ErrorContains(t, err, "b reads its master keys from "+b.Store)
	check(t, b, Off)

	for _, dir := range []string{f.dataDir, otherDir} {
		_, err := os.Stat(filepath.Join(dir, envelope.NextKeyFile))
		require.ErrorIs(t, err, fs.ErrNotExist, "no next key is made in %s", dir)
	}
	f.requireMasterKeys(t, old)
	require.Empty(t, f.masterRotations(t))
	// b still opens every tenant's key.
	for _, tenant := range tenants {
		b.Rotator.Keys.Forget(tenant)
		_, err := b.Rotator.Keys.Ring(ctx, tenant)
		require.NoError(t, err, tenant)
	}

	// Once b stops, a rotates.
	b.drop(ctx)
	check(t, a, Rotated)
	f.requireMasterKeys(t, currentMaster(t, f, f.dataDir))
}

// TestScheduleWaitsForAReplicaThatDoesNotSeeTheNextKey: a replica whose directory was
// cloned with its keyring ID claims the same store but never sees the next key. The
// rotation makes the next key and then waits, rewrapping nothing; the other replica
// refuses to make a next key of its own.
func TestScheduleWaitsForAReplicaThatDoesNotSeeTheNextKey(t *testing.T) {
	t.Parallel()
	f := setup(t, false)
	if f.masterKeySource(t).Kind != masterkey.KindFile {
		t.Skip("replicas with directories of their own share one token")
	}
	ctx := context.Background()
	otherDir := t.TempDir()
	for _, name := range []string{envelope.KeyFile, KeyringIDFile} {
		storeOf(t, f.dataDir) // makes the keyring ID
		b, err := os.ReadFile(filepath.Join(f.dataDir, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(otherDir, name), b, 0o600))
	}
	c := &clock{t: time.Now().UTC().Truncate(time.Microsecond)}
	a, b := f.replica(t, "a", f.dataDir, c), f.replica(t, "b", otherDir, c)
	require.Equal(t, a.Store, b.Store, "a cloned directory claims the same store")
	old := currentMaster(t, f, f.dataDir)

	check(t, a, NotDue)
	check(t, b, NotDue)
	c.Advance(time.Hour)
	check(t, a, Waiting)
	check(t, a, Waiting)
	next := currentMaster(t, f, f.dataDir)
	require.NotEqual(t, old, next)
	outcome, err := b.Check(ctx)
	require.Equal(t, Refused, outcome)
	require.ErrorIs(t, err, ErrNotShared)
	require.ErrorContains(t, err, "a wraps under master key "+next+", which this replica does not hold")
	_, err = os.Stat(filepath.Join(otherDir, envelope.NextKeyFile))
	require.ErrorIs(t, err, fs.ErrNotExist, "b makes no next key of its own")

	f.requireMasterKeys(t, old, next)
	require.Empty(t, f.masterRotations(t), "nothing is rewrapped while b lacks the key")
	at, _ := f.lastRotation(t)
	require.False(t, c.Now().Equal(at))
}

func TestCheckSchedulable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, err := masterkey.Locate("", dir, nil)
	require.NoError(t, err)
	require.NoError(t, CheckSchedulable(src))

	creds := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(creds, envelope.KeyFile), []byte("x"), 0o600))
	src, err = masterkey.Locate("", dir, func(k string) string {
		if k == masterkey.CredentialsEnv {
			return creds
		}
		return ""
	})
	require.NoError(t, err)
	require.True(t, src.Credential)
	require.ErrorIs(t, CheckSchedulable(src), ErrNotSchedulable)

	const token = "pkcs11:token=loopze;object=master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
	src, err = masterkey.Locate(token, dir, nil)
	require.NoError(t, err)
	require.NoError(t, CheckSchedulable(src))
	src, err = masterkey.Locate(strings.Replace(token, "object=master", "object=master;id=%01", 1), dir, nil)
	require.NoError(t, err)
	err = CheckSchedulable(src)
	require.ErrorIs(t, err, ErrNotSchedulable)
	require.NotContains(t, err.Error(), "1234")
}

// TestStoreID: replicas on one directory read one ID, whoever writes it first; another
// directory has another; a token is named by its URI without its PIN.
func TestStoreID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, err := masterkey.Locate("", dir, nil)
	require.NoError(t, err)
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, err := StoreID(src)
			if err == nil {
				ids[i] = id
			}
		})
	}
	wg.Wait()
	require.Regexp(t, `^file:[0-9a-f]{32}$`, ids[0])
	for _, id := range ids {
		require.Equal(t, ids[0], id, "one ID for one directory")
	}
	other, err := masterkey.Locate("", t.TempDir(), nil)
	require.NoError(t, err)
	id, err := StoreID(other)
	require.NoError(t, err)
	require.NotEqual(t, ids[0], id)

	require.NoError(t, os.WriteFile(filepath.Join(dir, KeyringIDFile), []byte("not hex\n"), 0o600))
	_, err = StoreID(src)
	require.ErrorContains(t, err, "does not hold 32 lowercase hex characters")

	tok, err := masterkey.Locate("pkcs11:token=loopze;serial=42;object=master?module-path=/lib/p11.so&pin-value=1234", dir, nil)
	require.NoError(t, err)
	id, err = StoreID(tok)
	require.NoError(t, err)
	require.Equal(t, "pkcs11:token=loopze;manufacturer=;serial=42;model=;object=master", id)
}

func TestCheckInterval(t *testing.T) {
	t.Parallel()
	for every, want := range map[time.Duration]time.Duration{
		0: time.Hour, time.Hour: 6 * time.Minute, 5 * time.Minute: time.Minute,
		10 * time.Hour: time.Hour, 2160 * time.Hour: time.Hour,
	} {
		require.Equal(t, want, CheckInterval(every), "%s", every)
	}
}
