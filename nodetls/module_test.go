package nodetls_test

import (
	"os/exec"
	"path/filepath"
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
