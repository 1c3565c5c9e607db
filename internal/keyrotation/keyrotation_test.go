package keyrotation

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	"github.com/loopze/certstore/internal/doctor"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
)

// The crash helper is this test binary re-executed: it runs one operation (the migration
// to tenant keys, a master key rotation or a tenant key rotation) with small batches,
// printing each durable step, until it finishes or dies at the step it was told.
const (
	envHelper = "LOOPZE_KEYROTATION_HELPER" // migrate, master, tenant or schedule
	envDB     = "LOOPZE_KEYROTATION_DB"
	envDir    = "LOOPZE_KEYROTATION_DIR"
	envKillAt = "LOOPZE_KEYROTATION_KILL_AT"
)

// rotatedTenant is the tenant the tenant rotation rotates.
const rotatedTenant = "acme"

func TestMain(m *testing.M) {
	if op := os.Getenv(envHelper); op != "" {
		os.Exit(runHelper(op))
	}
	testdb.Main(m)
}

// openKeys opens the keys a server started on dir has: the master key (in dir, or where
// the test master key URI says) and, while loopze.key exists, the key files that sealed
// rows before tenant keys.
func openKeys(pool *pgxpool.Pool, dir string) (*tenantkey.Keys, error) {
	master, err := tenantkeytest.Open(tenantkeytest.URIOf(dir), dir, nil)
	if err != nil {
		return nil, err
	}
	keys := &tenantkey.Keys{Pool: pool, Master: master}
	if _, err := os.Stat(filepath.Join(dir, envelope.KeyFile)); err == nil {
		if keys.Legacy, err = envelope.LoadExisting(dir, nil); err != nil {
			_ = master.Close()
			return nil, err
		}
	}
	return keys, nil
}

func runHelper(op string) int {
	ctx := context.Background()
	pool, err := db.Open(ctx, os.Getenv(envDB), slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keys, err := openKeys(pool, os.Getenv(envDir))
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
	r := &Rotator{Pool: pool, DataDir: os.Getenv(envDir), Keys: keys, BatchSize: 3, Settle: 10 * time.Millisecond}
	switch op {
	case "migrate":
		_, err = r.Migrate(ctx)
	case "master":
		_, err = r.Rotate(ctx)
	case "tenant":
		_, err = r.RotateTenant(ctx, rotatedTenant)
	case "schedule":
		err = runScheduleHelper(ctx, r)
	default:
		err = fmt.Errorf("unknown operation %q", op)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

var tenants = []string{"default", "acme"}

const (
	entriesPerTenant = 8
	secretsPerTenant = 4
)

type fixture struct {
	url     string
	pool    *pgxpool.Pool
	dataDir string
	// server is a catalogue whose keys were loaded before any rotation and are never
	// reloaded by the test: it stands for a running server.
	server *catalog.Service
}

// setup makes two tenants of inline entries (each with its version) and node secrets,
// and exports their files. With legacy the rows are sealed under the master key file
// itself, as releases before tenant keys sealed them: what the migration starts from.
func setup(t *testing.T, legacy bool, opts ...bool) *fixture {
	noExport := len(opts) > 0 && opts[0]
	t.Helper()
	ctx := context.Background()
	url := testdb.URL(t)
	pool, err := db.Open(ctx, url, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	keys := tenantkeytest.New(t, pool, dir)
	var old *envelope.Ring
	if legacy {
		// loopze.key: the master key file, or the key file left beside a master key now
		// in a token.
		old, err = envelope.Load(dir, nil)
		require.NoError(t, err)
		keys.Legacy = old
	}
	f := &fixture{url: url, pool: pool, dataDir: dir, server: &catalog.Service{Pool: pool, Keys: keys, Logger: slog.New(slog.DiscardHandler)}}
	for _, tenant := range tenants {
		ring := old
		if !legacy {
			ring, err = keys.Ring(ctx, tenant)
			require.NoError(t, err)
		}
		for i := range entriesPerTenant {
			id := fmt.Sprintf("e%d", i)
			cert, key := materialtest.Pair(t, materialtest.Options{CommonName: id})
			if !legacy {
				s := func(v string) *string { return &v }
				_, err := f.server.Create(ctx, tenant, catalog.Input{ID: id, Name: s(id), Type: s("client-pair"),
					Source: s("inline"), CertPEM: cert, KeyPEM: key})
				require.NoError(t, err)
				continue
			}
			writeLegacyEntry(t, pool, old, tenant, id, cert, key)
		}
		require.NoError(t, db.InTenant(ctx, pool, tenant, func(tx pgx.Tx) error {
			var rows []repo.NodeSecret
			for i := range secretsPerTenant {
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
	if legacy && noExport {
		return f
	}
	_, err = (&fileexport.Exporter{Pool: pool, Keys: keys, DataDir: dir}).ExportAll(ctx, false)
	require.NoError(t, err)
	return f
}

// beforeUpgrade, as setup's last argument, leaves a legacy fixture without tenant keys: as an
// install of a release before them is, until a server of this one starts.
const beforeUpgrade = true

// writeLegacyEntry stores an inline pair and its first version sealed under ring, as a
// release before tenant keys did.
func writeLegacyEntry(t *testing.T, pool *pgxpool.Pool, ring *envelope.Ring, tenant, id string, cert, key secret.PEM) {
	t.Helper()
	ctx := context.Background()
	m, issues := material.Inspect(material.ClientPair, cert, key, material.PEMFields, time.Now())
	require.Empty(t, issues)
	sealed, err := sealing.SealPair(ring, sealing.Place{Tenant: tenant, EntryID: id}, cert, key)
	require.NoError(t, err)
	v1, err := sealing.SealPair(ring, sealing.Place{Tenant: tenant, EntryID: id, Version: 1}, cert, key)
	require.NoError(t, err)
	row := &repo.Entry{TenantID: tenant, ID: id, Name: id, Type: material.ClientPair, Source: catalog.SourceInline,
		Sealed: sealed, Meta: m.Metadata, Version: 1}
	version := &repo.Version{TenantID: tenant, EntryID: id, Version: 1, Action: repo.VersionCreate, EntryVersion: 1,
		Name: id, Type: material.ClientPair, Source: catalog.SourceInline, Sealed: v1, Meta: m.Metadata}
	require.NoError(t, repo.WriteEntries(ctx, pool, tenant, true, []repo.EntryWrite{{Row: row, Versions: []*repo.Version{version}}}))
}

// requireAllReadable checks that every row opens with the keys a server starting now
// loads and through the running server, that every file opens with the master key, and
// that doctor finds no failure.
func (f *fixture) requireAllReadable(t *testing.T, when string) {
	t.Helper()
	ctx := context.Background()
	fresh, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err, when)
	defer fresh.Master.Close()
	for _, tenant := range tenants {
		var (
			entries  []*repo.Entry
			versions []*repo.Version
			secrets  []repo.NodeSecret
		)
		require.NoError(t, db.InTenant(ctx, f.pool, tenant, func(tx pgx.Tx) error {
			var err error
			if entries, err = repo.ExportEntries(ctx, tx, tenant); err != nil {
				return err
			}
			if versions, err = repo.ExportVersions(ctx, tx, tenant); err != nil {
				return err
			}
			secrets, err = repo.ExportNodeSecrets(ctx, tx, tenant)
			return err
		}))
		require.Len(t, entries, entriesPerTenant)
		require.Len(t, versions, entriesPerTenant)
		require.Len(t, secrets, secretsPerTenant)
		ring, err := fresh.Ring(ctx, tenant)
		require.NoError(t, err, when)
		for _, e := range entries {
			_, _, err := sealing.OpenPair(ring, sealing.Place{Tenant: tenant, EntryID: e.ID}, e.Sealed)
			require.NoError(t, err, "%s: %s/%s with the keys a starting server loads", when, tenant, e.ID)
			keyID, err := envelope.KeyID(e.Sealed.Cert)
			require.NoError(t, err)
			require.Equal(t, keyID, e.Sealed.KeyID, "the row records the key that wraps it")
			_, _, err = f.server.Open(ctx, e)
			require.NoError(t, err, "%s: %s/%s through the running server", when, tenant, e.ID)
		}
		for _, v := range versions {
			_, _, err := f.server.OpenVersion(ctx, v)
			require.NoError(t, err, "%s: %s/%s@%d through the running server", when, tenant, v.EntryID, v.Version)
		}
		for _, s := range secrets {
			pt, err := ring.Open(s.Sealed, sealing.NodeSecret(tenant, s.NodeID, s.Name))
			require.NoError(t, err, when)
			require.Equal(t, "secret of "+s.NodeID, string(pt))
		}
		data, err := os.ReadFile(credfile.Path(f.dataDir, tenant))
		require.NoError(t, err)
		_, _, err = credfile.Open(fresh.Opener(), data, tenant)
		require.NoError(t, err, "%s: file of %s", when, tenant)
	}
	rep := (&doctor.Doctor{Pool: f.pool, DataDir: f.dataDir, Keys: fresh, ExpiringWithin: -1, MasterKey: f.masterKeySource(t)}).Run(ctx)
	for _, c := range rep.Checks {
		require.NotEqual(t, doctor.Fail, c.Status, "%s: doctor: %+v", when, c)
	}
}

// masterKeySource is where the master key of the fixture lives, as doctor is told.
func (f *fixture) masterKeySource(t *testing.T) masterkey.Source {
	return tenantkeytest.Source(t, f.dataDir)
}

// killEachStep runs the helper op again and again, the k-th run killed right after its
// k-th durable step (each run resuming what the one before left), until a run finishes;
// after every kill everything still decrypts and doctor finds no failure. It returns the
// last step of each killed run.
func (f *fixture) killEachStep(t *testing.T, op string) map[string]int {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	lastSteps := map[string]int{}
	for k := 1; ; k++ {
		require.LessOrEqual(t, k, 80, "%s: no run finished", op)
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envHelper+"="+op, envDB+"="+f.url, envDir+"="+f.dataDir,
			fmt.Sprintf("%s=%d", envKillAt, k))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		lines := strings.Fields(string(out))
		require.NotEmpty(t, lines)
		last := lines[len(lines)-1]
		if err == nil {
			t.Logf("%s: run %d finished after %d steps", op, k, len(lines)-1)
			break
		}
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		require.Equal(t, "signal: killed", exit.Error(), "%s: run %d must die by the kill, not fail: %s", op, k, stderr.String())
		lastSteps[last]++
		f.requireAllReadable(t, fmt.Sprintf("%s: after kill %d (last step %s)", op, k, last))
	}
	t.Logf("%s: last step before each kill: %v", op, lastSteps)
	return lastSteps
}

// keyIDsOfTenants is the sorted current seal key IDs of the tenants.
func keyIDsOfTenants(t *testing.T, keys *tenantkey.Keys) []string {
	t.Helper()
	var ids []string
	for _, tenant := range tenants {
		ring, err := keys.Ring(context.Background(), tenant)
		require.NoError(t, err)
		ids = append(ids, ring.CurrentKeyID())
	}
	slices.Sort(ids)
	return ids
}

// TestMigrationSurvivesKillAtAnyPoint: the move of rows sealed under the master key to
// their tenant's key, as serve runs it at start, killed after each of its batches in
// turn, leaves every row readable; the run that finishes leaves every row under its
// tenant's key.
func TestMigrationSurvivesKillAtAnyPoint(t *testing.T) {
	t.Parallel()
	f := setup(t, true)
	legacyID := f.server.Keys.Legacy.CurrentKeyID()
	ids, err := KeyIDsInUse(context.Background(), f.pool)
	require.NoError(t, err)
	require.Equal(t, []string{legacyID}, ids)

	steps := f.killEachStep(t, "migrate")
	require.GreaterOrEqual(t, steps["batch-committed"], 3)

	fresh, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer fresh.Master.Close()
	ids, err = KeyIDsInUse(context.Background(), f.pool)
	require.NoError(t, err)
	require.Equal(t, keyIDsOfTenants(t, fresh), ids, "every row is under its tenant's key")
	require.NotContains(t, ids, legacyID)
}

// TestMasterRotationSurvivesKillAtAnyPoint kills a real rotate-key right after each of its
// durable steps in turn, from an install whose rows are still under the master key (so
// the migration runs first); after every kill everything decrypts, and running it again
// finishes. The rotation rewraps tenant keys, not rows: a runtime key given out before it
// keeps opening the files written after it.
func TestMasterRotationSurvivesKillAtAnyPoint(t *testing.T) {
	t.Parallel()
	f := setup(t, true)
	ctx := context.Background()
	before, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	fileKeys := map[string]string{}
	for _, tenant := range tenants {
		fk, err := before.FileKey(ctx, tenant)
		require.NoError(t, err)
		fileKeys[tenant] = fk.ID()
	}
	firstMaster := before.Master.Current().ID()
	require.NoError(t, before.Master.Close())

	steps := f.killEachStep(t, "master")
	for _, s := range []string{"next-written", "batch-committed", "tenant-key-rewrapped"} {
		require.Positive(t, steps[s], "a kill right after %s", s)
	}
	// A kill after a named step, whatever run it falls in: a run that finds no rotation
	// under way starts the next one.
	exe, err := os.Executable()
	require.NoError(t, err)
	for _, name := range []string{"next-written", "tenant-key-rewrapped", "tenant-keys-rewrapped", "exported", "promoted"} {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envHelper+"=master", envDB+"="+f.url, envDir+"="+f.dataDir, envKillAt+"="+name)
		out, err := cmd.Output()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "output: %s", out)
		lines := strings.Fields(string(out))
		require.Equal(t, name, lines[len(lines)-1])
		f.requireAllReadable(t, "after a kill right after "+name)
	}

	// Running it again finishes whatever was left half done.
	keys, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer keys.Master.Close()
	r := &Rotator{Pool: f.pool, DataDir: f.dataDir, Keys: keys, BatchSize: 3, Settle: 10 * time.Millisecond}
	rep, err := r.Rotate(ctx)
	require.NoError(t, err)
	require.Zero(t, rep.Rewrapped, "no row is left under the master key")
	require.Equal(t, len(tenants), rep.TenantKeys)
	f.requireAllReadable(t, "after the final rotation")
	require.NotEqual(t, firstMaster, rep.NewKeyID)
	require.Equal(t, []string{rep.NewKeyID}, keys.Master.IDs(), "only the new master key is left")
	if f.masterKeySource(t).Kind == masterkey.KindFile {
		_, err = os.Stat(filepath.Join(f.dataDir, envelope.NextKeyFile))
		require.ErrorIs(t, err, fs.ErrNotExist)
	}
	for _, tenant := range tenants {
		rows, err := repo.TenantKeys(ctx, f.pool, tenant)
		require.NoError(t, err)
		for _, k := range rows {
			require.Equal(t, rep.NewKeyID, k.MasterKeyID, "%s version %d", tenant, k.Version)
		}
		data, err := os.ReadFile(credfile.Path(f.dataDir, tenant))
		require.NoError(t, err)
		h, err := credfile.ParseHeader(data)
		require.NoError(t, err)
		require.Equal(t, rep.NewKeyID, h.TenantKey.MasterKeyID, "the file carries its key wrapped under the new master key")
		require.Equal(t, fileKeys[tenant], h.KeyID, "tenant keys are rewrapped, not replaced")
	}
	ids, err := KeyIDsInUse(ctx, f.pool)
	require.NoError(t, err)
	require.Equal(t, keyIDsOfTenants(t, keys), ids)
}

// TestTenantRotationSurvivesKillAtAnyPoint: rotate-key --tenant, killed after each of its
// steps in turn (each rerun makes one more version), leaves everything readable; the run
// that finishes leaves acme's rows and file under its newest version and the other tenant
// untouched.
func TestTenantRotationSurvivesKillAtAnyPoint(t *testing.T) {
	t.Parallel()
	f := setup(t, false)
	ctx := context.Background()
	ring, err := f.server.Keys.Ring(ctx, "default")
	require.NoError(t, err)
	otherKey := ring.CurrentKeyID()

	steps := f.killEachStep(t, "tenant")
	for _, s := range []string{"tenant-version-made", "batch-committed", "exported"} {
		require.Positive(t, steps[s], "a kill right after %s", s)
	}

	keys, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer keys.Master.Close()
	cur, err := keys.Current(ctx, rotatedTenant)
	require.NoError(t, err)
	require.Greater(t, cur.N, 2, "each killed run made a version")
	ids, err := KeyIDsInUse(ctx, f.pool)
	require.NoError(t, err)
	acme, err := keys.Ring(ctx, rotatedTenant)
	require.NoError(t, err)
	want := []string{otherKey, acme.CurrentKeyID()}
	slices.Sort(want)
	require.Equal(t, want, ids, "acme's rows are under its newest version, default's untouched")
	data, err := os.ReadFile(credfile.Path(f.dataDir, rotatedTenant))
	require.NoError(t, err)
	h, err := credfile.ParseHeader(data)
	require.NoError(t, err)
	require.Equal(t, cur.N, h.TenantKey.Version)
}

func TestPrepareThenRotate(t *testing.T) {
	t.Parallel()
	f := setup(t, false)
	ctx := context.Background()
	keys, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer keys.Master.Close()
	old := keys.Master.Current().ID()
	next, err := keys.Master.Next()
	require.NoError(t, err)
	again, err := keys.Master.Next()
	require.NoError(t, err)
	require.Equal(t, next.ID(), again.ID(), "a prepared key is the one the rotation moves to")
	if f.masterKeySource(t).Kind == masterkey.KindFile {
		info, err := os.Stat(filepath.Join(f.dataDir, envelope.NextKeyFile))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	}
	// Preparing rewraps nothing.
	for _, tenant := range tenants {
		rows, err := repo.TenantKeys(ctx, f.pool, tenant)
		require.NoError(t, err)
		require.Equal(t, old, rows[0].MasterKeyID)
	}

	r := &Rotator{Pool: f.pool, DataDir: f.dataDir, Keys: keys, Settle: 10 * time.Millisecond}
	rep, err := r.Rotate(ctx)
	require.NoError(t, err)
	require.Equal(t, next.ID(), rep.NewKeyID)
	require.Equal(t, len(tenants), rep.TenantKeys, "one key per tenant rewrapped")
	require.Zero(t, rep.Rewrapped, "no row moves")
	require.Len(t, rep.Files, 2)
	f.requireAllReadable(t, "after rotation")
}

// TestRotationRefusesToRetireAKeyStillInUse: a server that never reloads keeps wrapping
// the keys of new tenants under the old master key; the rotation gives up without
// retiring it.
func TestRotationRefusesToRetireAKeyStillInUse(t *testing.T) {
	t.Parallel()
	f := setup(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A stale server: its master keyring is read before the rotation and never again.
	staleKeys, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer staleKeys.Master.Close()
	staleMaster := staleKeys.Master.Current().ID()
	stale := &catalog.Service{Pool: f.pool, Keys: &tenantkey.Keys{Pool: f.pool, Master: neverReloads{staleKeys.Master}}, Logger: slog.New(slog.DiscardHandler)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			cert, _ := materialtest.Pair(t, materialtest.Options{})
			s := func(v string) *string { return &v }
			_, err := stale.Create(ctx, fmt.Sprintf("late-%d", i), catalog.Input{ID: "late", Name: s("late"),
				Type: s("ca-bundle"), Source: s("inline"), CertPEM: cert})
			if err != nil && ctx.Err() == nil {
				t.Logf("stale create: %v", err)
			}
		}
	})
	keys, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer keys.Master.Close()
	// The settle window must outlast one create on a loaded machine, or the rotation
	// sees a quiet moment and finishes.
	r := &Rotator{Pool: f.pool, DataDir: f.dataDir, Keys: keys, Passes: 2, Settle: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	_, err = r.Rotate(ctx)
	cancel()
	wg.Wait()
	require.ErrorIs(t, err, ErrStaleSealer)
	require.Contains(t, keys.Master.IDs(), staleMaster, "the old master key stays")
	require.Len(t, keys.Master.IDs(), 2, "the new one beside it")
	if f.masterKeySource(t).Kind == masterkey.KindFile {
		_, err = os.Stat(filepath.Join(f.dataDir, envelope.NextKeyFile))
		require.NoError(t, err, "loopze.key.next stays")
	}
}

// neverReloads is a master keyring that ignores Reload: a server that missed the news.
type neverReloads struct{ masterkey.Keyring }

func (neverReloads) Reload() error { return nil }

// TestMovingTheMasterKeyToAnotherStore: an install whose master key is data/loopze.key
// starts with LOOPZE_MASTER_KEY_URI naming another store (here another key file; a token
// works the same), loopze.key left in the data directory. Everything stays readable
// through the old file; rotate-key rewraps every tenant key under the new store's key,
// after which loopze.key can go.
func TestMovingTheMasterKeyToAnotherStore(t *testing.T) {
	t.Parallel()
	if tenantkeytest.InToken() {
		t.Skip("the fixture's master key is already in a token")
	}
	f := setup(t, false)
	ctx := context.Background()
	elsewhere := "file:" + filepath.Join(t.TempDir(), "master.key")
	open := func(withOld bool) *tenantkey.Keys {
		t.Helper()
		master, err := masterkey.Open(elsewhere, f.dataDir, os.Getenv, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = master.Close() })
		keys := &tenantkey.Keys{Pool: f.pool, Master: master}
		if withOld {
			keys.Legacy, err = envelope.LoadExisting(f.dataDir, nil)
			require.NoError(t, err)
		}
		return keys
	}
	readable := func(keys *tenantkey.Keys, when string) {
		t.Helper()
		svc := &catalog.Service{Pool: f.pool, Keys: keys, Logger: slog.New(slog.DiscardHandler)}
		for _, tenant := range tenants {
			e, err := repo.LookupEntries(ctx, f.pool, tenant, []string{"e0"})
			require.NoError(t, err)
			_, _, err = svc.Open(ctx, e[0])
			require.NoError(t, err, "%s: %s", when, tenant)
			data, err := os.ReadFile(credfile.Path(f.dataDir, tenant))
			require.NoError(t, err)
			_, _, err = credfile.Open(keys.Opener(), data, tenant)
			require.NoError(t, err, "%s: file of %s", when, tenant)
		}
	}
	moving := open(true)
	readable(moving, "with the old key file beside the new store")

	rep, err := (&Rotator{Pool: f.pool, DataDir: f.dataDir, Keys: moving, Settle: 10 * time.Millisecond}).Rotate(ctx)
	require.NoError(t, err)
	require.Equal(t, len(tenants), rep.TenantKeys)
	require.NoError(t, os.Rename(filepath.Join(f.dataDir, envelope.KeyFile), filepath.Join(t.TempDir(), "old.key")))
	readable(open(false), "after the rotation, without loopze.key")
}

// TestDoctorChangesNothingBeforeTheMigration: doctor on an install whose rows are still
// sealed under the master key, before any server of this release ran, makes no tenant key,
// opens every row with the legacy key and warns that they are left to move.
func TestDoctorChangesNothingBeforeTheMigration(t *testing.T) {
	t.Parallel()
	f := setup(t, true, beforeUpgrade)
	ctx := context.Background()
	keys, err := openKeys(f.pool, f.dataDir)
	require.NoError(t, err)
	defer keys.Master.Close()
	keys.ReadOnly = true
	rep := (&doctor.Doctor{Pool: f.pool, DataDir: f.dataDir, Keys: keys, ExpiringWithin: -1, MasterKey: f.masterKeySource(t)}).Run(ctx)
	rows := 0
	for _, c := range rep.Checks {
		if c.Check == "rows" {
			rows++
			require.Equal(t, doctor.Warn, c.Status, "%+v", c)
			require.Contains(t, c.Message, fmt.Sprint(entriesPerTenant+secretsPerTenant, " row(s)"))
		}
	}
	require.Equal(t, len(tenants), rows)
	for _, tenant := range tenants {
		stored, err := repo.TenantKeys(ctx, f.pool, tenant)
		require.NoError(t, err)
		require.Empty(t, stored, "doctor made no key for %s", tenant)
	}
}
