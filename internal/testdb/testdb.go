// Package testdb gives each test a real, migrated PostgreSQL database of its own, cloned
// from a template that goose migrates once per server (pgtestdb). Where the server comes
// from is decided once per test binary, in this order: LOOPZE_TEST_DATABASE_URL; a
// testcontainers PostgreSQL when a Docker engine answers (only in binaries built with
// -tags testcontainers, so the default build links no Docker client); a throwaway cluster
// from the local server binaries (internal/pgembed). Main stops whatever it started, so no
// postgres process survives `go test`.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { testdb.Main(m) }
package testdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // pgtestdb connects through database/sql with driver "pgx"
	"github.com/peterldowns/pgtestdb"
	"github.com/peterldowns/pgtestdb/migrators/goosemigrator"

	"github.com/loopze/certstore/internal/pgembed"
	"github.com/loopze/certstore/migrations"
)

// Environment variables the harness reads.
const (
	// EnvURL names an existing server to use (a postgres:// URL of a role that may create
	// databases and roles).
	EnvURL = "LOOPZE_TEST_DATABASE_URL"
	// EnvRequire set to 1 turns "no database available" into a test failure (CI).
	EnvRequire = "LOOPZE_REQUIRE_DB"
	// EnvImage is the container image for the testcontainers source (default postgres:16).
	EnvImage = "LOOPZE_TEST_PG_IMAGE"
	// EnvSource forces one source ("testcontainers" or "local") and fails the tests when
	// it cannot be had, instead of falling through; CI uses it to prove each path runs.
	EnvSource = "LOOPZE_TEST_DB_SOURCE"
)

// Kinds of source, as Kind reports them.
const (
	KindEnv            = "env"
	KindTestcontainers = "testcontainers"
	KindLocal          = "local"
)

// ErrNoMain means a test asked for a database in a package whose TestMain does not call
// Main, so nothing would stop the server afterwards.
var ErrNoMain = errors.New("testdb: the package's TestMain must call testdb.Main(m) so the test server is stopped")

// source is the server chosen for this test binary.
type source struct {
	kind string
	// conf reaches the server's "postgres" database as a role allowed to create
	// databases; pgtestdb clones templates through it.
	conf pgtestdb.Config
	// dump runs pg_dump against a database URL of this server.
	dump func(ctx context.Context, dbURL string) ([]byte, error)
	// stop releases the server; nil when there is nothing to release.
	stop func()
	// err says why no server could be had; the other fields are then unset.
	err error
	// misconfigured marks an err that must fail tests even without LOOPZE_REQUIRE_DB:
	// the operator asked for a server that cannot be used.
	misconfigured bool
}

var (
	mainRunning atomic.Bool
	once        sync.Once
	current     *source
	stopOnce    sync.Once
)

// Main wraps TestMain: it runs the tests, then stops any server the harness started
// (also when tests failed, and on SIGINT/SIGTERM), and exits with the tests' code.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit, for a TestMain that has its own cleanup to do after the
// tests: it returns the tests' exit code.
func Run(m *testing.M) int {
	mainRunning.Store(true)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		shutdown()
		fmt.Fprintf(os.Stderr, "testdb: %v: test server stopped\n", sig)
		os.Exit(2)
	}()
	code := run(m)
	signal.Stop(sigs)
	return code
}

// run is separate from Main so the deferred shutdown also runs when m.Run panics.
func run(m *testing.M) int {
	defer shutdown()
	return m.Run()
}

// shutdown releases the chosen source once, whoever asks first.
func shutdown() {
	stopOnce.Do(func() {
		// Waiting in once.Do means a source still being opened finishes first, so we
		// never miss a server that was starting when the tests ended.
		once.Do(func() { current = &source{err: errors.New("testdb: shut down")} })
		if current.stop != nil {
			current.stop()
		}
	})
}

// get opens the source on first use.
func get() *source {
	once.Do(func() { current = open() })
	return current
}

// need returns the source or ends the test: a skip when no server can be had, a failure
// under LOOPZE_REQUIRE_DB=1 or when the harness is misused.
func need(t testing.TB) *source {
	t.Helper()
	if !mainRunning.Load() {
		t.Fatal(ErrNoMain)
	}
	s := get()
	if s.err != nil {
		if s.misconfigured || os.Getenv(EnvRequire) == "1" {
			t.Fatalf("no test database: %v", s.err)
		}
		t.Skipf("no test database: %v", s.err)
	}
	return s
}

// migrator migrates the template once per server; its hash covers the migration files,
// so a changed migration gets a fresh template. The files sit at the root of the FS,
// which fs.Sub names ".", not "".
func migrator() *goosemigrator.GooseMigrator {
	return goosemigrator.New(".", goosemigrator.WithFS(migrations.FS))
}

// URL returns the connection string of a fresh, migrated database of this test's own,
// cloned from the template. The database is dropped when the test passes (kept for
// inspection when it fails). It skips the test when no database can be had, unless
// LOOPZE_REQUIRE_DB=1, when it fails.
func URL(t testing.TB) string {
	t.Helper()
	s := need(t)
	return pgtestdb.Custom(t, s.conf, migrator()).URL()
}

// AdminURL returns a superuser URL to the server's "postgres" database, for tests that
// create or drop databases, run pg_dump, and the like. Under LOOPZE_TEST_DATABASE_URL it
// is that URL's role, whatever its rights.
func AdminURL(t testing.TB) string {
	t.Helper()
	return need(t).conf.URL()
}

// Dump returns the plain-SQL pg_dump of the database at url (one of this server's), using
// a pg_dump that matches the server: the container's own for testcontainers, the local
// server's otherwise. It dumps as the admin role: the test role owns tables under FORCE
// ROW LEVEL SECURITY, which would hide rows from (and so fail) a dump taken as it.
func Dump(t testing.TB, url string) []byte {
	t.Helper()
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := s.dump(ctx, s.asAdmin(t, url))
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	return out
}

// asAdmin swaps the credentials of dbURL for the admin role's.
func (s *source) asAdmin(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse database URL for pg_dump: %v", err)
	}
	u.User = url.User(s.conf.User)
	if s.conf.Password != "" {
		u.User = url.UserPassword(s.conf.User, s.conf.Password)
	}
	return u.String()
}

// Kind reports which source is in use: "env", "testcontainers" or "local"; "" when none
// could be had.
func Kind() string { return get().kind }

// open picks the source, in the documented order.
func open() *source {
	if u := os.Getenv(EnvURL); u != "" {
		return openEnv(u)
	}
	switch want := os.Getenv(EnvSource); want {
	case "":
	case KindTestcontainers:
		s, err := openContainer()
		if err != nil {
			return &source{err: fmt.Errorf("%s=%s: %w", EnvSource, want, err), misconfigured: true}
		}
		return s
	case KindLocal:
		return openLocal()
	default:
		return &source{err: fmt.Errorf("%s=%q: want %s or %s", EnvSource, want, KindTestcontainers, KindLocal), misconfigured: true}
	}
	s, err := openContainer()
	if err == nil {
		return s
	}
	if !errors.Is(err, errNoEngine) {
		fmt.Fprintf(os.Stderr, "testdb: %v; using the local server binaries\n", err)
	}
	return openLocal()
}

// errNoEngine means no Docker engine answered: the quiet case of falling through.
var errNoEngine = errors.New("no Docker engine answers")

// openEnv uses the server the environment names. A URL that does not work fails the
// tests rather than skipping them: someone asked for that server on purpose.
func openEnv(raw string) *source {
	conf, err := configFromURL(raw)
	if err != nil {
		return &source{err: fmt.Errorf("%s: %w", EnvURL, err), misconfigured: true}
	}
	return &source{kind: KindEnv, conf: conf, dump: localDump}
}

// configFromURL turns a postgres:// URL into the pgtestdb configuration of its server's
// "postgres" database, keeping its query options (sslmode, a socket host=...).
func configFromURL(raw string) (pgtestdb.Config, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return pgtestdb.Config{}, errors.New("must be a postgres:// URL")
	}
	pass, _ := u.User.Password()
	conf := pgtestdb.Config{
		DriverName: "pgx",
		Host:       u.Hostname(),
		Port:       u.Port(),
		User:       u.User.Username(),
		Password:   pass,
		Database:   "postgres",
		Options:    u.RawQuery,
		// A test that leaks a pool must not turn cleanup into a failure of its own.
		ForceTerminateConnections: true,
	}
	if conf.Host == "" {
		conf.Host = "localhost" // a socket URL carries host=/dir in its options, which wins
	}
	if conf.Port == "" {
		conf.Port = "5432"
	}
	if conf.User == "" {
		conf.User = pgembed.Superuser
	}
	return conf, nil
}

// localDump runs the local pg_dump, preferring the one beside the server binaries so its
// version matches a local cluster.
func localDump(ctx context.Context, dbURL string) ([]byte, error) {
	exe := "pg_dump"
	if dir, err := pgembed.FindBinDir(); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "pg_dump")); err == nil {
			exe = filepath.Join(dir, "pg_dump")
		}
	}
	cmd := exec.CommandContext(ctx, exe, "--no-password", "--dbname", dbURL)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("run %s: %w: %s", exe, err, stderr.String())
	}
	return out, nil
}

// limitedBuffer keeps the first few KiB written to it, enough for an error message.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
