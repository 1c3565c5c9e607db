package pgembed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// testSettings make clusters cheap; durability is not under test.
var testSettings = map[string]string{"fsync": "off", "synchronous_commit": "off"}

// reachableDir is a fresh directory the postgres user can traverse; t.TempDir is 0700
// root-owned, which PostgreSQL cannot enter when we run as root.
func reachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgembed-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// start starts a cluster that is stopped when the test ends, whatever happens.
func start(t *testing.T, o Options) *Cluster {
	t.Helper()
	if o.Settings == nil {
		o.Settings = testSettings
	}
	c, err := Start(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

// query runs a one-value query on a fresh connection.
func query[T any](t *testing.T, url, sql string) T {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var v T
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&v))
	return v
}

func exec1(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	require.NoError(t, err)
}

// processesIn lists the pids whose working directory is dataDir: the postmaster and
// every backend of a cluster sit there.
func processesIn(t *testing.T, dataDir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && cwd == dataDir && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestStartStopRestart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), "nested", "pg")
	// A first run killed during initdb leaves this behind; it must not get in the way.
	require.NoError(t, os.Mkdir(filepath.Dir(dataDir), 0o755))
	require.NoError(t, os.Mkdir(dataDir+".initdb", 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dataDir+".initdb", "PG_VERSION"), []byte("junk"), 0o600))

	c := start(t, Options{DataDir: dataDir, Database: "loopze"})
	require.True(t, c.Owned())
	require.Equal(t, dataDir, c.SocketDir(), "a short path keeps the socket inside the data directory")
	require.Equal(t, "postgres://postgres@/loopze?host="+strings.ReplaceAll(dataDir, "/", "%2F")+"&sslmode=disable", c.URL("loopze"))
	require.Empty(t, query[string](t, c.URL("loopze"), "SHOW listen_addresses"), "no TCP listener")
	require.Equal(t, "off", query[string](t, c.URL("loopze"), "SHOW fsync"), "Settings reach the server")
	exec1(t, c.URL("loopze"), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	require.FileExists(t, filepath.Join(dataDir, "log", "postgres.log"))
	require.NoDirExists(t, dataDir+".initdb")

	require.NoError(t, c.Stop(context.Background()))
	require.Empty(t, processesIn(t, dataDir), "no postgres process survives Stop")
	require.NoFileExists(t, filepath.Join(dataDir, "postmaster.pid"))
	require.NoError(t, c.Stop(context.Background()), "a second Stop is a no-op")

	again := start(t, Options{DataDir: dataDir, Database: "loopze"})
	require.True(t, again.Owned())
	require.Equal(t, 42, query[int](t, again.URL("loopze"), "SELECT v FROM kept"), "the data directory is reused")
	require.NoError(t, again.Stop(context.Background()))
	require.Empty(t, processesIn(t, dataDir))
}

func TestRecoversFromKilledPostmaster(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), "pg")
	// synchronous_commit stays on: an asynchronous commit is legitimately lost when the
	// server dies, and this test is about what survives.
	c := start(t, Options{DataDir: dataDir, Database: "loopze", Settings: map[string]string{"fsync": "off"}})
	exec1(t, c.URL("loopze"), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")

	require.NoError(t, syscall.Kill(c.pid, syscall.SIGKILL))
	<-c.exited
	require.FileExists(t, filepath.Join(dataDir, "postmaster.pid"), "a killed postmaster leaves its pid file")

	again := start(t, Options{DataDir: dataDir, Database: "loopze"})
	require.True(t, again.Owned(), "a dead postmaster is replaced, not attached to")
	require.NotEqual(t, c.pid, again.pid)
	require.Equal(t, 7, query[int](t, again.URL("loopze"), "SELECT v FROM kept"))
	require.NoError(t, again.Stop(context.Background()))
	require.Empty(t, processesIn(t, dataDir))
}

func TestStalePIDFileOfUnrelatedProcess(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), "pg")
	c := start(t, Options{DataDir: dataDir})
	require.NoError(t, c.Stop(context.Background()))

	// After a reboot the pid in a stale file can belong to anything; postgres alone would
	// refuse to start while that process lives.
	other := exec.Command("sleep", "600")
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	stale := fmt.Sprintf("%d\n%s\n1700000000\n5432\n%s\n\n  5432001         0\nready   \n", other.Process.Pid, dataDir, dataDir)
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "postmaster.pid"), []byte(stale), 0o600))

	again := start(t, Options{DataDir: dataDir})
	require.True(t, again.Owned())
	require.Equal(t, 1, query[int](t, again.URL("postgres"), "SELECT 1"))
}

func TestAttachToRunningPostmaster(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), "pg")
	first := start(t, Options{DataDir: dataDir, Database: "loopze"})

	borrowed := start(t, Options{DataDir: dataDir, Database: "other"})
	require.False(t, borrowed.Owned(), "a live postmaster is attached to, not duplicated")
	require.Equal(t, first.pid, borrowed.pid)
	require.Equal(t, 1, query[int](t, borrowed.URL("other"), "SELECT 1"), "the database is created on the attached server too")
	require.NoError(t, borrowed.Stop(context.Background()))
	require.Equal(t, 1, query[int](t, first.URL("loopze"), "SELECT 1"), "Stop of a borrowed cluster leaves it running")

	adopted := start(t, Options{DataDir: dataDir, StopAttached: true})
	require.True(t, adopted.Owned(), "StopAttached adopts the orphan")
	require.NoError(t, adopted.Stop(context.Background()))
	<-first.exited
	require.Empty(t, processesIn(t, dataDir))
	require.NoError(t, first.Stop(context.Background()), "stopping an already stopped server is quiet")
}

func TestLongPathFallsBackToShortSocketDir(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), strings.Repeat("d", 60), strings.Repeat("e", 40), "pg")
	c := start(t, Options{DataDir: dataDir})
	require.NotEqual(t, dataDir, c.SocketDir())
	require.LessOrEqual(t, len(filepath.Join(c.SocketDir(), socketName)), maxSocketPath)
	require.Equal(t, 1, query[int](t, c.URL("postgres"), "SELECT 1"))

	url, up := Probe(context.Background(), dataDir)
	require.True(t, up, "Probe derives the same fallback directory")
	require.Equal(t, c.URL("postgres"), url)

	require.NoError(t, c.Stop(context.Background()))
	require.NoDirExists(t, c.SocketDir(), "Stop removes the fallback socket directory")
}

func TestProbe(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), "pg")
	_, up := Probe(context.Background(), dataDir)
	require.False(t, up)

	c := start(t, Options{DataDir: dataDir})
	url, up := Probe(context.Background(), dataDir)
	require.True(t, up)
	require.Equal(t, c.URL("postgres"), url)

	require.NoError(t, c.Stop(context.Background()))
	_, up = Probe(context.Background(), dataDir)
	require.False(t, up)
}

func TestStartRefusals(t *testing.T) {
	t.Parallel()
	notCluster := filepath.Join(reachableDir(t), "pg")
	require.NoError(t, os.MkdirAll(notCluster, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(notCluster, "precious.txt"), []byte("x"), 0o600))

	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no data dir", Options{}, "no data directory"},
		{"listening setting", Options{DataDir: "/nonexistent/pg", Settings: map[string]string{"listen_addresses": "*"}}, "listen_addresses"},
		{"port setting", Options{DataDir: "/nonexistent/pg", Settings: map[string]string{"port": "5433"}}, "port"},
		{"foreign directory", Options{DataDir: notCluster}, "holds no PostgreSQL cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Start(context.Background(), tt.opts)
			require.ErrorContains(t, err, tt.want)
		})
	}
	require.FileExists(t, filepath.Join(notCluster, "precious.txt"), "a foreign directory is left untouched")
}

func TestUnreachableParent(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root switches to the postgres user")
	}
	locked := filepath.Join(reachableDir(t), "locked")
	require.NoError(t, os.Mkdir(locked, 0o700))

	_, err := Start(context.Background(), Options{DataDir: filepath.Join(locked, "data", "pg")})
	require.ErrorIs(t, err, ErrUnreachable)
	require.NotContains(t, err.Error(), "\n", "one clear line")
	require.Contains(t, err.Error(), "chmod o+x "+locked)
	require.Contains(t, err.Error(), "LOOPZE_DATA_DIR")
}

func TestConcurrentStartsShareOneServer(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), "pg")
	clusters := make(chan *Cluster, 2)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			c, err := Start(context.Background(), Options{DataDir: dataDir, Database: "loopze", Settings: testSettings})
			if c != nil {
				clusters <- c
			}
			errs <- err
		}()
	}
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	a, b := <-clusters, <-clusters
	t.Cleanup(func() { _ = a.Stop(context.Background()); _ = b.Stop(context.Background()) })
	require.NotEqual(t, a.Owned(), b.Owned(), "one starts the server, the other attaches to it")
	require.Equal(t, a.pid, b.pid)
	require.Equal(t, 1, query[int](t, b.URL("loopze"), "SELECT 1"))
	require.Equal(t, 1, query[int](t, a.URL("loopze"), "SELECT 1"))
}
