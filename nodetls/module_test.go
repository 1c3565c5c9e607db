package nodetls_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExampleRuntimeBuilds builds and vets examples/runtime, a module of its own with a
// replace to this one: the package must stay importable from outside, and the example's
// go.mod and go.sum must follow this module's requirements.
func TestExampleRuntimeBuilds(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	dir := filepath.Join("..", "examples", "runtime")
	for _, args := range [][]string{{"build", "-o", filepath.Join(t.TempDir(), "runtime"), "."}, {"vet", "."}} {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(cmd.Environ(), "GOFLAGS=-mod=readonly")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %v in examples/runtime:\n%s", args, out)
	}
}

// serverSide are the packages and modules of the server: a runtime that imports nodetls
// must link none of them (a vendor auditing an edge binary must not find a PostgreSQL
// driver or a migration tool in it).
var serverSide = []string{
	"github.com/jackc/pgx", "github.com/jackc/puddle", "github.com/pressly/goose", "github.com/maypok86/otter",
	"github.com/danielgtaylor/huma", "github.com/golang-jwt/jwt",
	"github.com/loopze/certstore/migrations", "github.com/loopze/certstore/internal/db",
	"github.com/loopze/certstore/internal/repo", "github.com/loopze/certstore/internal/catalog",
	"github.com/loopze/certstore/internal/audit", "github.com/loopze/certstore/internal/fileexport",
	"github.com/loopze/certstore/internal/workspace", "github.com/loopze/certstore/internal/api",
	"github.com/loopze/certstore/internal/pgembed",
}

// TestRuntimeSideLinksNoServer lists what nodetls and examples/runtime (a module of its
// own) link, and fails on any package of the server side.
func TestRuntimeSideLinksNoServer(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	for _, c := range []struct{ dir, pkg string }{{".", "."}, {filepath.Join("..", "examples", "runtime"), "."}} {
		cmd := exec.Command(goBin, "list", "-deps", c.pkg)
		cmd.Dir = c.dir
		cmd.Env = append(cmd.Environ(), "GOFLAGS=-mod=readonly")
		out, err := cmd.Output()
		require.NoError(t, err, "go list -deps in %s", c.dir)
		for _, dep := range strings.Fields(string(out)) {
			for _, server := range serverSide {
				require.False(t, dep == server || strings.HasPrefix(dep, server+"/"),
					"%s links %s, which belongs to the server side", c.dir, dep)
			}
		}
	}
}
