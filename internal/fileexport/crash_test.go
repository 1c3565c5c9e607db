package fileexport

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/repo"
)

// The crash helper is this test binary re-executed: it exports one tenant in a loop, a
// change before each export, pausing at random between the steps of each atomic write,
// until the test kills it with SIGKILL.
const (
	envCrashHelper = "LOOPZE_FILEEXPORT_CRASH_HELPER"
	envCrashDB     = "LOOPZE_FILEEXPORT_CRASH_DB"
	envCrashDir    = "LOOPZE_FILEEXPORT_CRASH_DIR"
	crashTenant    = "acme"
)

func runCrashHelper() int {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	pool, err := db.Open(ctx, os.Getenv(envCrashDB), logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ring, err := envelope.LoadExisting(os.Getenv(envCrashDir), logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	x := &Exporter{Pool: pool, Ring: ring, DataDir: os.Getenv(envCrashDir)}
	stepHook = func(string) { time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond) }
	fmt.Println("ready")
	for {
		err := db.InTenant(ctx, pool, crashTenant, func(tx pgx.Tx) error {
			_, err := repo.BumpGeneration(ctx, tx, crashTenant)
			return err
		})
		if err == nil {
			_, err = x.ExportTenant(ctx, crashTenant, true)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

// TestExportSurvivesKillAtAnyPoint kills a real exporting process at random instants, many
// times, and checks that the file is always a whole, decryptable file: the old one or a
// new one, never torn.
func TestExportSurvivesKillAtAnyPoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const entries = 40
	for i := range entries {
		b.createInline(t, crashTenant, fmt.Sprintf("e%02d", i), "client-pair")
	}
	first, err := b.exporter(t).ExportTenant(ctx, crashTenant, true)
	require.NoError(t, err)

	exe, err := os.Executable()
	require.NoError(t, err)
	path := Path(b.dataDir, crashTenant)
	var (
		killedMidWrite int
		lastGen        = first.Generation
	)
	for i := range 30 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envCrashHelper+"=1", envCrashDB+"="+b.url, envCrashDir+"="+b.dataDir)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err, "helper did not start")
		require.Equal(t, "ready\n", line)
		// The kill instant is the test's random variable.
		time.Sleep(time.Duration(rand.IntN(120)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()

		temps, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+FileName+".tmp-*"))
		require.NoError(t, err)
		if len(temps) > 0 {
			killedMidWrite++
		}
		data, err := os.ReadFile(path)
		require.NoError(t, err, "iteration %d", i)
		doc, h, err := Open(b.ring, data, crashTenant)
		require.NoError(t, err, "iteration %d: torn or damaged file", i)
		require.Len(t, doc.Entries, entries)
		require.GreaterOrEqual(t, h.Generation, lastGen, "iteration %d: file went back in time", i)
		lastGen = h.Generation
	}
	t.Logf("%d of 30 kills landed inside a write; generations %d..%d", killedMidWrite, first.Generation, lastGen)
	require.Greater(t, lastGen, first.Generation, "the helper never completed a write")
	require.Positive(t, killedMidWrite, "no kill landed inside a write; the test proved nothing")

	// The next export clears what the killed writers left behind.
	_, err = b.exporter(t).ExportTenant(ctx, crashTenant, true)
	require.NoError(t, err)
	temps, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+FileName+".tmp-*"))
	require.NoError(t, err)
	require.Empty(t, temps)
}
