package testdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/peterldowns/pgtestdb"

	"github.com/loopze/certstore/internal/pgembed"
)

const (
	// localPrefix names the per-binary directories under os.TempDir().
	localPrefix = "loopze-test-"
	// ownerFile records the pid of the test binary a directory belongs to.
	ownerFile = "owner.pid"
	// orphanAge is how old a directory without an owner file must be before it counts as
	// abandoned: younger ones may belong to a binary that is still setting up.
	orphanAge = 10 * time.Minute
)

// localSettings trade durability for speed: a throwaway cluster never needs to survive a
// power cut. max_connections leaves room for many parallel tests with their own pools.
var localSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "200",
}

// openLocal starts a throwaway cluster for this test binary in a fresh directory that
// the postgres user can reach (os.TempDir is world-traversable, unlike t.TempDir).
func openLocal() *source {
	sweepLeftovers()
	binDir, err := pgembed.FindBinDir()
	if err != nil {
		return &source{err: err}
	}
	dir, err := os.MkdirTemp("", localPrefix)
	if err != nil {
		return &source{err: fmt.Errorf("create cluster directory: %w", err)}
	}
	fail := func(err error) *source {
		_ = os.RemoveAll(dir)
		return &source{err: err}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(fmt.Errorf("open %s to the postgres user: %w", dir, err))
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(fmt.Errorf("record owner of %s: %w", dir, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := pgembed.Start(ctx, pgembed.Options{
		DataDir:  filepath.Join(dir, "pg"),
		BinDir:   binDir,
		Settings: localSettings,
		// A panicking or killed test binary never reaches Main's cleanup; the kernel
		// then takes the server down with it.
		DieWithParent: true,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return fail(err)
	}
	return &source{
		kind: KindLocal,
		conf: socketConfig(cluster.SocketDir()),
		dump: localDump,
		stop: func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := cluster.Stop(ctx); err != nil {
				fmt.Fprintf(os.Stderr, "testdb: %v\n", err)
			}
			_ = os.RemoveAll(dir)
		},
	}
}

// socketConfig reaches the superuser's "postgres" database over the socket in dir.
// pgtestdb builds host:port URLs; the host=... option overrides that host, and the port
// names the socket file.
func socketConfig(dir string) pgtestdb.Config {
	return pgtestdb.Config{
		DriverName:                "pgx",
		Host:                      "localhost",
		Port:                      "5432",
		User:                      pgembed.Superuser,
		Database:                  "postgres",
		Options:                   url.Values{"host": {dir}, "sslmode": {"disable"}}.Encode(),
		ForceTerminateConnections: true,
	}
}

// sweepLeftovers removes the directories of test binaries that died without cleaning up
// (killed, or panicked), stopping a server still running there first. Directories of
// live binaries are left alone, so parallel `go test` packages never disturb each other.
func sweepLeftovers() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), localPrefix+"*"))
	for _, dir := range dirs {
		if !abandoned(dir) {
			continue
		}
		dataDir := filepath.Join(dir, "pg")
		if _, up := pgembed.Probe(context.Background(), dataDir); up {
			stopLeftover(dataDir)
		}
		_ = os.RemoveAll(dir)
	}
}

// abandoned reports whether the test binary that made dir is gone.
func abandoned(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		fi, serr := os.Stat(dir)
		return errors.Is(err, os.ErrNotExist) && serr == nil && time.Since(fi.ModTime()) > orphanAge
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return true
	}
	if pid == os.Getpid() {
		return false
	}
	err = syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

// stopLeftover adopts a server left running on dataDir and shuts it down.
func stopLeftover(dataDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgembed.Start(ctx, pgembed.Options{DataDir: dataDir, StopAttached: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return
	}
	_ = c.Stop(ctx)
}
