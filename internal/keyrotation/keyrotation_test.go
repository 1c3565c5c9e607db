package keyrotation

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/testdb"
)

// The crash helper is this test binary re-executed: it runs one rotation with small
// batches, printing each durable step, until it finishes or the test kills it.
const (
	envHelper = "LOOPZE_KEYROTATION_HELPER"
	envDB     = "LOOPZE_KEYROTATION_DB"
	envDir    = "LOOPZE_KEYROTATION_DIR"
	envKillAt = "LOOPZE_KEYROTATION_KILL_AT"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(runHelper())
	}
	testdb.Main(m)
}

func runHelper() int {
	ctx := context.Background()
	pool, err := db.Open(ctx, os.Getenv(envDB), slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// LOOPZE_KEYROTATION_KILL_AT is a step count ("3": the third step) or a step name
	// ("exported": its first occurrence).
	killAt := os.Getenv(envKillAt)
	steps := 0
	stepHook = func(s string) {
		fmt.Println(s)
		steps++
		if killAt == strconv.Itoa(steps) || killAt == s {
			// A real SIGKILL, right after the step became durable: nothing of ours runs
			// after it, as after a power cut or an OOM kill.
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	fmt.Println("ready")
	r := &Rotator{Pool: pool, DataDir: os.Getenv(envDir), BatchSize: 3, Settle: 10 * time.Millisecond}
	if _, err := r.Rotate(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

var tenants = []string{"default", "acme"}

type fixture struct {
	url     string
	pool    *pgxpool.Pool
	dataDir string
	// server is a catalogue whose ring was loaded before any rotation and is never
	// reloaded by the test: it stands for a running server.
	server *catalog.Service
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	url := testdb.URL(t)
	pool, err := db.Open(ctx, url, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	ring, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	f := &fixture{url: url, pool: pool, dataDir: dir,
		server: &catalog.Service{Pool: pool, Ring: ring, Logger: slog.New(slog.DiscardHandler)}}
	for _, tenant := range tenants {
		for i := range 8 {
			id := fmt.Sprintf("e%d", i)
			cert, key := materialtest.Pair(t, materialtest.Options{CommonName: id})
			s := func(v string) *string { return &v }
			_, err := f.server.Create(ctx, tenant, catalog.Input{ID: id, Name: s(id), Type: s("client-pair"),
				Source: s("inline"), CertPEM: cert, KeyPEM: key})
			require.NoError(t, err)
		}
		require.NoError(t, db.InTenant(ctx, pool, tenant, func(tx pgx.Tx) error {
			var rows []repo.NodeSecret
			for i := range 4 {
				node := fmt.Sprintf("n%d", i)
				sealed, err := ring.Seal([]byte("secret of "+node), sealing.NodeSecret(tenant, node, "password"))
				if err != nil {
					return err
				}
				rows = append(rows, repo.NodeSecret{NodeID: node, Name: "password", Sealed: sealed, KeyID: ring.CurrentKeyID()})
			}
			if _, err := repo.BumpGeneration(ctx, tx, tenant); err != nil {
				return err
			}
			return repo.ImportNodeSecrets(ctx, tx, tenant, rows)
		}))
	}
	_, err = (&fileexport.Exporter{Pool: pool, Ring: ring, DataDir: dir}).ExportAll(ctx, false)
	require.NoError(t, err)
	return f
}

// requireAllReadable checks that every row opens with the keys in the data directory and
// through the running server, and that every file opens with the data directory's keys.
func (f *fixture) requireAllReadable(t *testing.T, when string) {
	t.Helper()
	ctx := context.Background()
	ring, err := envelope.LoadExisting(f.dataDir, nil)
	require.NoError(t, err, when)
	for _, tenant := range tenants {
		var (
			entries []*repo.Entry
			secrets []repo.NodeSecret
		)
		require.NoError(t, db.InTenant(ctx, f.pool, tenant, func(tx pgx.Tx) error {
			var err error
			if entries, err = repo.ExportEntries(ctx, tx, tenant); err != nil {
				return err
			}
			secrets, err = repo.ExportNodeSecrets(ctx, tx, tenant)
			return err
		}))
		require.Len(t, entries, 8)
		require.Len(t, secrets, 4)
		for _, e := range entries {
			_, _, err := sealing.OpenPair(ring, sealing.Place{Tenant: tenant, EntryID: e.ID}, e.Sealed)
			require.NoError(t, err, "%s: %s/%s with the data dir's keys", when, tenant, e.ID)
			keyID, err := envelope.KeyID(e.Sealed.Cert)
			require.NoError(t, err)
			require.Equal(t, keyID, e.Sealed.KeyID, "the row records the key that wraps it")
			_, _, err = f.server.Open(e)
			require.NoError(t, err, "%s: %s/%s through the running server", when, tenant, e.ID)
		}
		for _, s := range secrets {
			pt, err := ring.Open(s.Sealed, sealing.NodeSecret(tenant, s.NodeID, s.Name))
			require.NoError(t, err, when)
			require.Equal(t, "secret of "+s.NodeID, string(pt))
		}
		data, err := os.ReadFile(credfile.Path(f.dataDir, tenant))
		require.NoError(t, err)
		_, _, err = credfile.Open(ring, data, tenant)
		require.NoError(t, err, "%s: file of %s", when, tenant)
	}
}

// TestRotationSurvivesKillAtAnyPoint kills a real rotate-key process right after each of
// its durable steps in turn (the k-th run dies at its k-th step, each run resuming what the
// one before left); after every kill everything still decrypts, and running it again
// finishes.
func TestRotationSurvivesKillAtAnyPoint(t *testing.T) {
	t.Parallel()
	f := setup(t)
	exe, err := os.Executable()
	require.NoError(t, err)
	firstKey := f.server.Ring.CurrentKeyID()

	lastSteps := map[string]int{}
	killed := 0
	for k := 1; k <= 60; k++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envHelper+"=1", envDB+"="+f.url, envDir+"="+f.dataDir,
			fmt.Sprintf("%s=%d", envKillAt, k))
		out, err := cmd.Output()
		lines := strings.Fields(string(out))
		require.NotEmpty(t, lines)
		last := lines[len(lines)-1]
		if err == nil {
			t.Logf("run %d finished the rotation", k)
			break
		}
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		require.Equal(t, "signal: killed", exit.Error(), "run %d must die by the kill, not fail", k)
		killed++
		lastSteps[last]++
		f.requireAllReadable(t, fmt.Sprintf("after kill %d (last step %s)", k, last))
	}
	// Then a kill right after each kind of step by name, whatever run it falls in: a run
	// that finds the rotation complete starts the next one.
	for _, name := range []string{"next-written", "batch-committed", "exported", "promoted"} {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envHelper+"=1", envDB+"="+f.url, envDir+"="+f.dataDir, envKillAt+"="+name)
		out, err := cmd.Output()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "output: %s", out)
		lines := strings.Fields(string(out))
		require.Equal(t, name, lines[len(lines)-1])
		lastSteps[name]++
		f.requireAllReadable(t, "after a kill right after "+name)
	}
	t.Logf("last step before each kill: %v", lastSteps)
	require.GreaterOrEqual(t, killed, 3)

	// Running it again finishes whatever was left half done.
	r := &Rotator{Pool: f.pool, DataDir: f.dataDir, BatchSize: 3, Settle: 10 * time.Millisecond}
	rep, err := r.Rotate(context.Background())
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(f.dataDir, envelope.NextKeyFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	f.requireAllReadable(t, "after the final rotation")
	ids, err := KeyIDsInUse(context.Background(), f.pool)
	require.NoError(t, err)
	require.Equal(t, []string{rep.NewKeyID}, ids, "every row is under the new key")
	require.NotEqual(t, firstKey, rep.NewKeyID)
	ring, err := envelope.LoadExisting(f.dataDir, nil)
	require.NoError(t, err)
	require.Equal(t, []string{rep.NewKeyID}, ring.KeyIDs(), "only the new key is left on disk")
	for _, tenant := range tenants {
		data, err := os.ReadFile(credfile.Path(f.dataDir, tenant))
		require.NoError(t, err)
		h, err := credfile.ParseHeader(data)
		require.NoError(t, err)
		require.Equal(t, rep.NewKeyID, h.KeyID)
	}
}

func TestPrepareThenRotate(t *testing.T) {
	t.Parallel()
	f := setup(t)
	r := &Rotator{Pool: f.pool, DataDir: f.dataDir, Settle: 10 * time.Millisecond}
	id, created, err := r.Prepare()
	require.NoError(t, err)
	require.True(t, created)
	info, err := os.Stat(filepath.Join(f.dataDir, envelope.NextKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	again, created, err := r.Prepare()
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, id, again)
	// Prepare changes no row.
	ids, err := KeyIDsInUse(context.Background(), f.pool)
	require.NoError(t, err)
	require.Equal(t, []string{f.server.Ring.CurrentKeyID()}, ids)

	rep, err := r.Rotate(context.Background())
	require.NoError(t, err)
	require.True(t, rep.Resumed)
	require.Equal(t, id, rep.NewKeyID)
	// Per tenant: 8 inline entries, the version each one's create recorded, 4 node secrets.
	require.EqualValues(t, 2*(8+8+4), rep.Rewrapped)
	require.Len(t, rep.Files, 2)
	f.requireAllReadable(t, "after rotation")
}

// TestRotationRefusesToRetireAKeyStillInUse: a server that never reloads keeps sealing
// under the old key; the rotation gives up without replacing loopze.key.
func TestRotationRefusesToRetireAKeyStillInUse(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A stale server: its ring is built from the old key bytes only, so Reload cannot help.
	oldKey, err := envelope.ReadKeyFile(filepath.Join(f.dataDir, envelope.KeyFile))
	require.NoError(t, err)
	staleRing, err := envelope.NewRing(oldKey)
	require.NoError(t, err)
	stale := &catalog.Service{Pool: f.pool, Ring: staleRing, Logger: slog.New(slog.DiscardHandler)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			cert, _ := materialtest.Pair(t, materialtest.Options{})
			s := func(v string) *string { return &v }
			_, _ = stale.Create(ctx, "acme", catalog.Input{ID: fmt.Sprintf("late-%d", i), Name: s("late"),
				Type: s("ca-bundle"), Source: s("inline"), CertPEM: cert})
		}
	})
	// The settle window must outlast one create (entry, version and audit record, sealed
	// twice) on a loaded machine, or the rotation sees a quiet moment and finishes.
	r := &Rotator{Pool: f.pool, DataDir: f.dataDir, Passes: 2, Settle: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	_, err = r.Rotate(ctx)
	cancel()
	wg.Wait()
	require.ErrorIs(t, err, ErrStaleSealer)
	got, err := envelope.ReadKeyFile(filepath.Join(f.dataDir, envelope.KeyFile))
	require.NoError(t, err)
	require.Equal(t, []byte(oldKey), []byte(got), "the old key file stays")
	_, err = os.Stat(filepath.Join(f.dataDir, envelope.NextKeyFile))
	require.NoError(t, err, "the new key stays beside it")
}
