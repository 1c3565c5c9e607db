package pgembed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pidFile is what postmaster.pid tells about the server that wrote it.
type pidFile struct {
	pid       int
	socketDir string // empty when the server listens on no socket (not ours then)
}

// readPIDFile parses <dataDir>/postmaster.pid; ok is false when there is none (or it is
// too short to name a process, as when a server died while writing it).
func readPIDFile(dataDir string) (pidFile, bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return pidFile{}, false
	}
	lines := strings.Split(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return pidFile{}, false
	}
	pf := pidFile{pid: pid}
	// Line 5 is the first unix socket directory (see PostgreSQL's pidfile.h).
	if len(lines) > 4 {
		pf.socketDir = strings.TrimSpace(lines[4])
	}
	return pf, true
}

// alive reports whether pid names a running (not zombie) process.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no procfs: trust kill(2)
	}
	// The state follows the parenthesised command name, which may itself hold spaces.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// runsIn reports whether pid is a process whose working directory is dataDir, which is
// how a postmaster looks (it chdirs into its data directory). When procfs cannot tell
// (no permission), it answers true: treating a live process as the server is the
// cautious mistake, as it never deletes a live server's lock file.
func runsIn(pid int, dataDir string) bool {
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	want, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		want = dataDir
	}
	return filepath.Clean(cwd) == filepath.Clean(want)
}

// lockDir takes an exclusive flock on path, waiting while another process holds it, and
// returns its release. The kernel drops the lock if we die, so a crash never leaves the
// directory locked.
func lockDir(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another process starting the cluster (lock %s): %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}
