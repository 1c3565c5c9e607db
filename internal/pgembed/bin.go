package pgembed

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrNoBinaries means no PostgreSQL server binaries (initdb and postgres) could be found.
// Its text names the three ways out so the operator can act on it as printed.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) found in PATH, " +
	"`pg_config --bindir` or /usr/lib/postgresql/*/bin: install the PostgreSQL server package " +
	"(e.g. `apt-get install postgresql`), or set LOOPZE_DATABASE_URL to use an existing server, " +
	"or run `docker compose up`")

// debianBinGlob is where Debian and Ubuntu install each major version side by side, off PATH.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// FindBinDir locates the directory holding the PostgreSQL server binaries. It looks in
// PATH first (a directory holding initdb and postgres or pg_ctl), then asks
// `pg_config --bindir`, then takes the newest /usr/lib/postgresql/*/bin. A PATH hit that
// is a symlink farm resolves to the directory the real binaries live in, so postgres
// finds its share directory. It returns ErrNoBinaries when all three come up empty.
func FindBinDir() (string, error) {
	return findBinDir(os.Getenv("PATH"), pgConfigBinDir, debianBinGlob)
}

// findBinDir is FindBinDir with its three sources injected, so tests need not touch the
// process environment.
func findBinDir(pathList string, pgConfig func() string, glob string) (string, error) {
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // a relative PATH entry depends on the working directory: never trust it
		}
		if isExecutable(filepath.Join(dir, "initdb")) &&
			(isExecutable(filepath.Join(dir, "postgres")) || isExecutable(filepath.Join(dir, "pg_ctl"))) {
			if real := realServerDir(dir); real != "" {
				return real, nil
			}
		}
	}
	if dir := pgConfig(); dir != "" && hasServer(dir) {
		return dir, nil
	}
	matches, _ := filepath.Glob(glob)
	sort.Slice(matches, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(matches[j])), filepath.Base(filepath.Dir(matches[i])))
	})
	for _, dir := range matches {
		if hasServer(dir) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

// realServerDir returns the directory initdb really lives in when it also holds postgres
// (following a symlinked initdb), else dir itself when dir holds postgres, else "".
func realServerDir(dir string) string {
	if target, err := filepath.EvalSymlinks(filepath.Join(dir, "initdb")); err == nil {
		if real := filepath.Dir(target); hasServer(real) {
			return real
		}
	}
	if hasServer(dir) {
		return dir
	}
	return ""
}

// hasServer reports whether dir holds both binaries Start executes.
func hasServer(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// pgConfigBinDir asks pg_config, bounded in time: a wedged wrapper must not hang startup.
func pgConfigBinDir() string {
	exe, err := exec.LookPath("pg_config")
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "--bindir").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// versionLess orders "9.6" before "15" before "16": numerically by dotted component,
// with non-numeric names sorted first so a stray directory never wins.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int = -1, -1
		if i < len(as) {
			if n, err := strconv.Atoi(as[i]); err == nil {
				x = n
			}
		}
		if i < len(bs) {
			if n, err := strconv.Atoi(bs[i]); err == nil {
				y = n
			}
		}
		if x != y {
			return x < y
		}
	}
	return a < b
}
