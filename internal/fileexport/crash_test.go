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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
)

// The crash helper is this test binary re-executed: it exports one tenant in a loop, a
// change before each export, pausing at random between the steps of each atomic write,
// until the test kills it with SIGKILL.
const (
	envCrashHelper = "LOOPZE_FILEEXPORT_CRASH_HELPER"
	envCrashDB     = "LOOPZE_FILEEXPORT_CRASH_DB"
	envCrashDir    = "LOOPZE_FILEEXPORT_CRASH_DIR"
	envCrashAt     = "LOOPZE_FILEEXPORT_CRASH_AT"
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
	master, err := tenantkeytest.Open(tenantkeytest.URIOf(os.Getenv(envCrashDir)), os.Getenv(envCrashDir), logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	x := &Exporter{Pool: pool, Keys: &tenantkey.Keys{Pool: pool, Master: master}, DataDir: os.Getenv(envCrashDir)}
	// LOOPZE_FILEEXPORT_CRASH_AT is "<step>:<n>": SIGKILL at the n-th time the writer
	// reaches that step. Empty: pause at random between steps until killed from outside.
	var (
		killStep string
		killN    int
		seen     int
	)
	if at := os.Getenv(envCrashAt); at != "" {
		name, n, _ := strings.Cut(at, ":")
		killStep, killN = name, atoi(n)
	}
	stepHook = func(s string) {
		if s == killStep {
			if seen++; seen == killN {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
		if killStep == "" {
			time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
		}
	}
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

// TestExportSurvivesKillAtAnyPoint kills a real exporting process with SIGKILL at every
// step of the atomic write (an empty temp file, a half-written one, a whole unsynced one, a
// synced one, right after the rename), a few times each, and then at random instants: the
// file is always a whole, decryptable file, the old one or a new one, never torn, and never
// older than before.
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
	path := credfile.Path(b.dataDir, crashTenant)
	lastGen := first.Generation
	check := func(what string) {
		t.Helper()
		data, err := os.ReadFile(path)
		require.NoError(t, err, what)
		doc, h, err := credfile.Open(b.keys.Opener(), data, crashTenant)
		require.NoError(t, err, "%s: torn or damaged file", what)
		require.Len(t, doc.Entries, entries, what)
		require.GreaterOrEqual(t, h.Generation, lastGen, "%s: file went back in time", what)
		lastGen = h.Generation
	}
	helper := func(at string) *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envCrashHelper+"=1", envCrashDB+"="+b.url, envCrashDir+"="+b.dataDir, envCrashAt+"="+at)
		return cmd
	}

	midWrite := 0
	for _, s := range []string{stepTempCreated, stepTempPartial, stepTempWritten, stepTempSynced, stepRenamed} {
		for n := 1; n <= 2; n++ {
			at := fmt.Sprintf("%s:%d", s, n)
			out, err := helper(at).Output()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "%s: the helper must die by the kill (output %s)", at, out)
			require.Equal(t, "signal: killed", exit.Error(), at)
			temps, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+credfile.FileName+".tmp-*"))
			require.NoError(t, err)
			if s != stepRenamed {
				require.NotEmpty(t, temps, "%s: the kill must leave the writer's temp file behind", at)
				midWrite++
			}
			check("kill at " + at)
		}
	}
	require.Greater(t, lastGen, first.Generation, "kills after the rename must have published new files")

	// Then at random instants, as an operator's kill -9 would land.
	for i := range 10 {
		cmd := helper("")
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err, "helper did not start")
		require.Equal(t, "ready\n", line)
		time.Sleep(time.Duration(rand.IntN(120)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
		check(fmt.Sprintf("random kill %d", i))
	}
	t.Logf("%d kills inside a write; generations %d..%d", midWrite, first.Generation, lastGen)

	// The next export clears what the killed writers left behind.
	_, err = b.exporter(t).ExportTenant(ctx, crashTenant, true)
	require.NoError(t, err)
	temps, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+credfile.FileName+".tmp-*"))
	require.NoError(t, err)
	require.Empty(t, temps)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
