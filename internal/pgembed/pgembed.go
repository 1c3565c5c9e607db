// Package pgembed supervises a PostgreSQL cluster run from the locally installed server
// binaries: it creates the cluster on first use, starts the postmaster listening on a unix
// socket only (no TCP port, so two checkouts on one machine never clash), waits until it
// accepts connections, creates the application database, and stops it cleanly. It also
// recovers from the leftovers of a killed run: a stale postmaster.pid, or a postmaster
// still alive on the data directory, which it attaches to instead of starting another.
//
// PostgreSQL refuses to run as root, so when the caller is root the cluster is owned by
// and runs as the `postgres` OS user.
package pgembed

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Superuser is the role initdb creates and every URL of this package connects as.
const Superuser = "postgres"

const (
	// defaultStartTimeout bounds how long Start waits for the server; crash recovery after
	// a kill can take a while on a large cluster, so it is generous.
	defaultStartTimeout = 60 * time.Second
	// pollInterval paces readiness checks: postgres offers no readiness signal to a
	// process that is not its parent under systemd, so asking is the only way.
	pollInterval = 50 * time.Millisecond
	// maxLogSize rotates postgres.log at start so a long-lived dev cluster stays small.
	maxLogSize = 10 << 20
	// logTailLines is how much of the server log an error quotes.
	logTailLines = 20
)

// fixedSettings are owned by this package: changing them would open a TCP port or move
// the socket where URL and Probe do not look.
var fixedSettings = []string{"listen_addresses", "unix_socket_directories", "port"}

// Options configure Start.
type Options struct {
	// DataDir is the cluster directory, e.g. <LOOPZE_DATA_DIR>/pg. Missing parents are
	// created.
	DataDir string
	// BinDir holds initdb and postgres; FindBinDir is asked when it is empty.
	BinDir string
	// Database is created when missing; empty creates none.
	Database string
	// Settings are extra `postgres -c` settings, e.g. fsync=off for tests. The listening
	// settings (listen_addresses, unix_socket_directories, port) are refused.
	Settings map[string]string
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
	// StopAttached adopts a postmaster found already running on DataDir (an orphan of a
	// killed server): Owned reports true and Stop stops it. Leave it false to borrow a
	// running server's cluster without taking it down afterwards.
	StopAttached bool
	// DieWithParent has the kernel give the postmaster an immediate shutdown if this
	// process dies without calling Stop (a panicking or killed test binary). Meant for
	// throwaway clusters; a server wants its orphan to survive and be adopted.
	DieWithParent bool
	// StartTimeout bounds the wait for the server to accept connections (default 60s).
	StartTimeout time.Duration
}

// Cluster is a running PostgreSQL server on a data directory, started or attached to.
type Cluster struct {
	dataDir   string
	socketDir string
	logPath   string
	log       *slog.Logger
	pid       int
	owned     bool

	// cmd and exited are set when this Cluster started the postmaster as its child;
	// waitErr is written before exited closes.
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error

	mu      sync.Mutex
	stopped bool
}

// Start brings up the cluster in o.DataDir and returns once it accepts connections and
// o.Database exists. On first run it initdb's the cluster (trust authentication over the
// socket, host connections rejected, no TCP listener). The socket lives in the data
// directory, or, when that path is too long for a unix socket (about 107 bytes), in
// /tmp/loopze-pg-<hash of the data directory>. If a postmaster already runs on the data
// directory and answers, Start attaches to it (see Options.StopAttached). A stale
// postmaster.pid left by a killed server is left to postgres, which replaces it; one whose
// pid now names an unrelated process is removed, since postgres would refuse to start.
// Concurrent Starts on one data directory are serialised by a flock on <DataDir>.lock, so
// the later one attaches to the server the earlier one launched.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.DataDir == "" {
		return nil, errors.New("start postgres: no data directory given")
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: resolve %s: %w", o.DataDir, err)
	}
	for _, k := range fixedSettings {
		if _, ok := o.Settings[k]; ok {
			return nil, fmt.Errorf("start postgres: setting %s is managed by pgembed and cannot be overridden", k)
		}
	}
	id, err := currentIdentity()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := prepareParents(dataDir, id); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &Cluster{
		dataDir:   dataDir,
		socketDir: socketDirFor(dataDir),
		logPath:   filepath.Join(dataDir, "log", "postgres.log"),
		log:       cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "pgembed", "dir", dataDir),
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(o.StartTimeout, defaultStartTimeout))
	defer cancel()

	// Two processes starting on one data directory at once (a server and a subcommand)
	// must not both initdb or both launch: the second waits, then attaches.
	unlock, err := lockDir(ctx, dataDir+".lock")
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	defer unlock()

	attached, err := c.attach(ctx, o.StopAttached)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if !attached {
		binDir := o.BinDir
		if binDir == "" {
			if binDir, err = FindBinDir(); err != nil {
				return nil, err
			}
		}
		if err := c.initdb(ctx, id, binDir, o.Settings); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		if err := c.launch(ctx, id, binDir, o); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	if o.Database != "" {
		if err := c.createDatabase(ctx, o.Database); err != nil {
			if c.exited != nil {
				_ = c.Stop(context.WithoutCancel(ctx))
			}
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	return c, nil
}

// URL is the connection string of database on this cluster, over its unix socket, e.g.
// postgres://postgres@/loopze?host=/srv/data/pg&sslmode=disable.
func (c *Cluster) URL(database string) string { return socketURL(c.socketDir, database) }

// SocketDir is the directory holding the server's unix socket.
func (c *Cluster) SocketDir() string { return c.socketDir }

// Owned reports whether Stop will stop the server: true when Start launched it or adopted
// it with Options.StopAttached.
func (c *Cluster) Owned() bool { return c.owned }

// Stop shuts an owned server down with a fast shutdown (SIGINT: sessions are ended,
// nothing committed is lost) and waits until the postmaster has exited. If ctx ends first
// it escalates to an immediate shutdown, which the next Start recovers from, and returns
// an error. Stop is a no-op on a cluster that is not owned or already stopped.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.owned || c.stopped {
		return nil
	}
	var err error
	if c.exited != nil {
		err = c.stopChild(ctx)
	} else {
		err = c.stopAdopted(ctx)
	}
	if err != nil {
		return err
	}
	c.stopped = true
	if c.socketDir != c.dataDir {
		// The fallback directory is ours alone and postgres has removed its socket; an
		// error means something else lives there now, so leave it be.
		_ = os.Remove(c.socketDir)
	}
	c.log.Info("postgres stopped", "pid", c.pid)
	return nil
}

func (c *Cluster) stopChild(ctx context.Context) error {
	select {
	case <-c.exited:
		c.log.Warn("postgres had already exited", "pid", c.pid, "err", c.waitErr)
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
		return nil
	case <-ctx.Done():
	}
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	return fmt.Errorf("stop postgres (pid %d): fast shutdown did not finish, forced an immediate shutdown: %w", c.pid, ctx.Err())
}

// stopAdopted stops a postmaster that is not our child: we cannot wait(2) for it, so we
// watch for the process to disappear.
func (c *Cluster) stopAdopted(ctx context.Context) error {
	if err := syscall.Kill(c.pid, syscall.SIGINT); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop postgres (pid %d): %w", c.pid, err)
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for alive(c.pid) {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(c.pid, syscall.SIGQUIT)
			return fmt.Errorf("stop postgres (pid %d): fast shutdown did not finish, sent an immediate shutdown: %w", c.pid, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Probe reports whether a postmaster accepts connections on dataDir's socket, and the URL
// of its "postgres" database (replace the path to reach another database). The URL is
// returned even when the server is down: it is where the server will listen.
func Probe(ctx context.Context, dataDir string) (string, bool) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return "", false
	}
	dir := socketDirFor(abs)
	if pf, ok := readPIDFile(abs); ok && pf.socketDir != "" {
		dir = pf.socketDir
	}
	u := socketURL(dir, "postgres")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return u, ping(ctx, u) == nil
}

// attach looks for a live postmaster on the data directory and, when it answers, makes
// c describe it. It returns false when none runs (including a stale pid file).
func (c *Cluster) attach(ctx context.Context, adopt bool) (bool, error) {
	pf, ok := readPIDFile(c.dataDir)
	if !ok {
		return false, nil
	}
	if !alive(pf.pid) {
		c.log.Info("stale postmaster.pid from an earlier run; postgres will replace it", "pid", pf.pid)
		return false, nil
	}
	if !runsIn(pf.pid, c.dataDir) {
		// After a crash the pid can be reused by an unrelated process; postgres would
		// then refuse to start ("lock file already exists") although no server runs.
		c.log.Warn("postmaster.pid names an unrelated live process; removing it", "pid", pf.pid)
		if err := os.Remove(filepath.Join(c.dataDir, "postmaster.pid")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("remove stale postmaster.pid: %w", err)
		}
		return false, nil
	}
	if pf.socketDir != "" {
		c.socketDir = pf.socketDir
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := ping(ctx, c.URL("postgres"))
		if err == nil {
			c.pid, c.owned = pf.pid, adopt
			c.log.Info("attached to running postgres", "pid", c.pid, "adopted", adopt)
			return true, nil
		}
		if !alive(pf.pid) {
			return false, nil // it was on its way out; start afresh
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("postmaster pid %d runs on %s but does not accept connections: %w (last error: %v)\n%s",
				pf.pid, c.dataDir, ctx.Err(), err, c.logTail(0))
		case <-tick.C:
		}
	}
}

// initdb creates the cluster when the data directory holds none. It runs into a sibling
// directory renamed into place at the end, so a run killed halfway leaves nothing that
// looks like a cluster and the next run simply starts over.
func (c *Cluster) initdb(ctx context.Context, id identity, binDir string, settings map[string]string) error {
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	switch empty, err := isEmptyDir(c.dataDir); {
	case err == nil && !empty:
		return fmt.Errorf("%s exists but holds no PostgreSQL cluster (no PG_VERSION): move it aside or choose another LOOPZE_DATA_DIR", c.dataDir)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("inspect %s: %w", c.dataDir, err)
	}
	tmp := c.dataDir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove leftover %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if err := id.own(tmp); err != nil {
		return err
	}
	args := []string{"-D", tmp, "-U", Superuser, "--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--no-locale"}
	if settings["fsync"] == "off" {
		args = append(args, "--no-sync") // a cluster that runs without fsync gains nothing from a synced initdb
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), args...)
	cmd.Dir = "/" // the caller's working directory may be closed to the postgres user
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: id.credential(), Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	c.log.Info("creating PostgreSQL cluster", "bin", binDir)
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("initdb %s: %w\n%s", c.dataDir, err, lastLines(out.Bytes(), logTailLines))
	}
	// Written into the config too, so a cluster started by hand with pg_ctl stays off TCP.
	conf, err := os.OpenFile(filepath.Join(tmp, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf: %w", err)
	}
	_, werr := io.WriteString(conf, "\n# Unix socket only: no TCP port, so clusters never clash.\nlisten_addresses = ''\n")
	if err := errors.Join(werr, conf.Close()); err != nil {
		return fmt.Errorf("write postgresql.conf: %w", err)
	}
	if err := os.Rename(tmp, c.dataDir); err != nil {
		return fmt.Errorf("move new cluster into %s: %w", c.dataDir, err)
	}
	return nil
}

// launch starts the postmaster as our child and waits until it accepts connections. It
// retries a start that fails because the shared memory of a killed postmaster is still
// held by its exiting children, which lasts a moment only.
func (c *Cluster) launch(ctx context.Context, id identity, binDir string, o Options) error {
	if err := prepareSocketDir(c.socketDir, c.dataDir, id); err != nil {
		return err
	}
	logFile, offset, err := c.openLog(id)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own descriptor
	args := []string{"-D", c.dataDir, "-c", "listen_addresses=", "-c", "port=5432",
		"-c", "unix_socket_directories=" + quoteDir(c.socketDir)}
	for _, k := range slices.Sorted(maps.Keys(o.Settings)) {
		args = append(args, "-c", k+"="+o.Settings[k])
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		cmd := exec.Command(filepath.Join(binDir, "postgres"), args...)
		cmd.Dir = c.dataDir
		cmd.Stdout, cmd.Stderr = logFile, logFile
		// A process group of its own: Ctrl-C in the terminal reaches us, not the server,
		// and we shut it down in order.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: id.credential()}
		if o.DieWithParent {
			cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("run %s: %w", cmd.Path, err)
		}
		c.cmd, c.pid, c.exited, c.owned = cmd, cmd.Process.Pid, make(chan struct{}), true
		go func(exited chan struct{}) {
			// Reaping at once matters: a zombie postmaster still "exists" for kill(2)
			// and would block the next start on this data directory.
			c.waitErr = cmd.Wait()
			close(exited)
		}(c.exited)
		err := c.waitReady(ctx, offset)
		if err == nil {
			c.log.Info("postgres ready", "pid", c.pid, "socket", c.socketDir)
			return nil
		}
		if !errors.Is(err, errExited) || !strings.Contains(c.logTail(offset), "is still in use") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}

// errExited marks a postmaster that died during startup.
var errExited = errors.New("postgres exited during startup")

// waitReady polls the socket until the server answers, it exits, or ctx ends (then it is
// shut down, so a failed Start leaves no process behind).
func (c *Cluster) waitReady(ctx context.Context, logOffset int64) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		if last = ping(ctx, c.URL("postgres")); last == nil {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("%w (%v); server log %s:\n%s", errExited, c.waitErr, c.logPath, c.logTail(logOffset))
		case <-ctx.Done():
			_ = c.cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				_ = c.cmd.Process.Kill()
				<-c.exited
			}
			return fmt.Errorf("wait for postgres to accept connections on %s: %w (last error: %v); server log %s:\n%s",
				c.socketDir, ctx.Err(), last, c.logPath, c.logTail(logOffset))
		case <-tick.C:
		}
	}
}

// openLog opens <DataDir>/log/postgres.log for appending, rotating an oversized one, and
// returns the offset this run's output starts at.
func (c *Cluster) openLog(id identity) (*os.File, int64, error) {
	dir := filepath.Dir(c.logPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, fmt.Errorf("create log directory: %w", err)
	}
	if err := id.own(dir); err != nil {
		return nil, 0, err
	}
	if fi, err := os.Stat(c.logPath); err == nil && fi.Size() > maxLogSize {
		_ = os.Rename(c.logPath, c.logPath+".1")
	}
	f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("open server log: %w", err)
	}
	if err := id.own(c.logPath); err != nil {
		f.Close()
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat server log: %w", err)
	}
	return f, fi.Size(), nil
}

// logTail returns the last lines the server logged since offset.
func (c *Cluster) logTail(offset int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return "(no server log)"
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "(server log unreadable)"
	}
	const window = 8 << 10
	offset = max(offset, fi.Size()-window, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, fi.Size()-offset))
	return lastLines(b, logTailLines)
}

// createDatabase creates name unless it exists; a concurrent creator winning is fine.
func (c *Cluster) createDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	c.log.Info("created database", "database", name)
	return nil
}

// ping opens and closes one connection, bounded so a wedged server cannot stall a poll.
func ping(ctx context.Context, connURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// socketURL is the pgx/libpq URL of database over the unix socket in dir.
func socketURL(dir, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Path:     "/" + database,
		RawQuery: url.Values{"host": {dir}, "sslmode": {"disable"}}.Encode(),
	}
	return u.String()
}

// quoteDir protects a directory holding commas or spaces inside unix_socket_directories,
// which is a comma-separated list.
func quoteDir(dir string) string {
	if strings.ContainsAny(dir, ", \t") {
		return `"` + dir + `"`
	}
	return dir
}
