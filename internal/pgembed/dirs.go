package pgembed

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ErrUnreachable means the postgres OS user cannot enter a directory on the way to the
// data directory, so the cluster could never start there.
var ErrUnreachable = errors.New("data directory unreachable by the postgres user")

// maxSocketPath is the longest unix socket path the kernel accepts (sun_path is 108 bytes
// including the terminating NUL).
const maxSocketPath = 107

// socketName is the file postgres creates in its socket directory for the default port.
const socketName = ".s.PGSQL.5432"

// identity is the OS account the cluster belongs to and runs as.
type identity struct {
	name   string
	uid    int
	gid    int
	groups []uint32
	// switchUser is true when we run as root and must drop to the postgres user, which
	// PostgreSQL insists on.
	switchUser bool
}

// currentIdentity returns the postgres user when running as root, else the current user.
func currentIdentity() (identity, error) {
	if os.Geteuid() != 0 {
		return identity{name: strconv.Itoa(os.Geteuid()), uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return identity{}, fmt.Errorf("look up the postgres OS user (PostgreSQL refuses to run as root): %w", err)
	}
	id := identity{name: u.Username, switchUser: true}
	if id.uid, err = strconv.Atoi(u.Uid); err != nil {
		return identity{}, fmt.Errorf("parse uid of postgres user: %w", err)
	}
	if id.gid, err = strconv.Atoi(u.Gid); err != nil {
		return identity{}, fmt.Errorf("parse gid of postgres user: %w", err)
	}
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			id.groups = append(id.groups, uint32(n))
		}
	}
	return id, nil
}

// credential is what the child processes run as; nil keeps our own.
func (id identity) credential() *syscall.Credential {
	if !id.switchUser {
		return nil
	}
	return &syscall.Credential{Uid: uint32(id.uid), Gid: uint32(id.gid), Groups: id.groups}
}

// own hands path to the cluster's user; a no-op when we already are that user.
func (id identity) own(path string) error {
	if !id.switchUser {
		return nil
	}
	if err := os.Lchown(path, id.uid, id.gid); err != nil {
		return fmt.Errorf("chown %s to the postgres user: %w", path, err)
	}
	return nil
}

// canSearch reports whether id may traverse a directory with the given stat, from its
// mode bits alone (ACLs are rare on these paths and would only make access wider).
func (id identity) canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case int(st.Uid) == id.uid:
		return perm&0o100 != 0
	case int(st.Gid) == id.gid || slices.Contains(id.groups, st.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// prepareParents creates the missing directories above dataDir (mode 0755 regardless of
// umask, so the postgres user can pass) and, when we switch users, checks every ancestor
// is searchable by it, failing with one line naming the directory in the way.
func prepareParents(dataDir string, id identity) error {
	parent := filepath.Dir(dataDir)
	var missing []string
	for dir := parent; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(dir); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("inspect %s: %w", dir, err)
		}
		missing = append(missing, dir)
		if dir == filepath.Dir(dir) {
			break
		}
	}
	for _, dir := range slices.Backward(missing) {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return fmt.Errorf("make %s traversable: %w", dir, err)
		}
	}
	if !id.switchUser {
		return nil
	}
	return checkReachable(parent, id)
}

// checkReachable walks from / down to dir and reports the first directory id cannot enter.
func checkReachable(dir string, id identity) error {
	var chain []string
	for d := dir; ; d = filepath.Dir(d) {
		chain = append(chain, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for _, d := range slices.Backward(chain) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("inspect %s: %w", d, err)
		}
		if !id.canSearch(fi) {
			return fmt.Errorf("%w: the %s user cannot enter %s; run `chmod o+x %s` or set LOOPZE_DATA_DIR to a directory it can reach",
				ErrUnreachable, id.name, d, d)
		}
	}
	return nil
}

// socketDirFor is where the cluster of dataDir listens: the data directory itself, so two
// checkouts never share a socket, unless that path is too long for a unix socket. Then it
// is a short directory in /tmp named after a hash of the data directory, so every process
// (the server, Probe, subcommands) derives the same one without talking to each other.
func socketDirFor(dataDir string) string {
	if len(dataDir)+1+len(socketName) <= maxSocketPath {
		return dataDir
	}
	sum := sha256.Sum256([]byte(dataDir))
	return filepath.Join(shortTempDir(), "loopze-pg-"+hex.EncodeToString(sum[:8]))
}

// shortTempDir prefers $TMPDIR but not when it is so long the socket would not fit anyway.
func shortTempDir() string {
	if t := os.TempDir(); len(t)+len("/loopze-pg-0123456789abcdef/")+len(socketName) <= maxSocketPath {
		return t
	}
	return "/tmp"
}

// prepareSocketDir creates the fallback socket directory, refusing one that someone else
// planted (it lives in a world-writable directory).
func prepareSocketDir(dir, dataDir string, id identity) error {
	if dir == dataDir {
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create socket directory %s: %w", dir, err)
	}
	if err := id.own(dir); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("inspect socket directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || (ok && int(st.Uid) != id.uid) {
		return fmt.Errorf("socket directory %s is not a directory owned by the cluster's user; remove it", dir)
	}
	return nil
}

// isEmptyDir reports whether dir exists and holds nothing.
func isEmptyDir(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	return len(entries) == 0, nil
}

// lastLines returns at most n trailing lines of b, trimmed, for error messages.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
