package pgembed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeBins makes dir hold executables of the given names.
func fakeBins(t *testing.T, dir string, names ...string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for _, n := range names {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755))
	}
	return dir
}

func TestFindBinDir(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	full := fakeBins(t, filepath.Join(root, "full"), "initdb", "postgres", "pg_ctl")
	clientOnly := fakeBins(t, filepath.Join(root, "client"), "psql", "pg_dump")
	initdbOnly := fakeBins(t, filepath.Join(root, "initdbonly"), "initdb")
	notExec := filepath.Join(root, "notexec")
	require.NoError(t, os.MkdirAll(notExec, 0o755))
	for _, n := range []string{"initdb", "postgres"} {
		require.NoError(t, os.WriteFile(filepath.Join(notExec, n), nil, 0o644))
	}
	// A symlink farm like /usr/local/bin resolves to where the binaries really live.
	farm := filepath.Join(root, "farm")
	require.NoError(t, os.MkdirAll(farm, 0o755))
	for _, n := range []string{"initdb", "pg_ctl"} {
		require.NoError(t, os.Symlink(filepath.Join(full, n), filepath.Join(farm, n)))
	}
	glob := filepath.Join(root, "lib", "*", "bin")
	for _, v := range []string{"9.6", "10", "16", "15"} {
		fakeBins(t, filepath.Join(root, "lib", v, "bin"), "initdb", "postgres")
	}
	fakeBins(t, filepath.Join(root, "lib", "17", "bin"), "psql") // a newer client-only install

	pgConfig := func(dir string) func() string { return func() string { return dir } }
	tests := []struct {
		name     string
		path     []string
		pgConfig string
		glob     string
		want     string
	}{
		{"PATH first", []string{clientOnly, full}, fakeBins(t, filepath.Join(root, "other"), "initdb", "postgres"), glob, full},
		{"PATH symlink farm resolves", []string{farm}, "", "", full},
		{"relative PATH entries are ignored", []string{"."}, "", "", ""},
		{"PATH needs postgres or pg_ctl beside initdb", []string{initdbOnly}, full, "", full},
		{"non-executables do not count", []string{notExec}, "", glob, filepath.Join(root, "lib", "16", "bin")},
		{"pg_config next", []string{clientOnly}, full, glob, full},
		{"pg_config pointing at a client-only dir is skipped", nil, clientOnly, glob, filepath.Join(root, "lib", "16", "bin")},
		{"newest versioned dir, numerically", nil, "", glob, filepath.Join(root, "lib", "16", "bin")},
		{"nothing anywhere", []string{clientOnly}, "", filepath.Join(root, "none", "*"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := findBinDir(strings.Join(tt.path, string(os.PathListSeparator)), pgConfig(tt.pgConfig), cmpOr(tt.glob, filepath.Join(root, "none", "*")))
			if tt.want == "" {
				require.ErrorIs(t, err, ErrNoBinaries)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestErrNoBinariesNamesTheWaysOut(t *testing.T) {
	t.Parallel()
	msg := ErrNoBinaries.Error()
	for _, way := range []string{"apt-get install postgresql", "LOOPZE_DATABASE_URL", "docker compose up"} {
		require.Contains(t, msg, way)
	}
}

func TestVersionLess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		less bool
	}{
		{"9.6", "10", true},
		{"10", "9.6", false},
		{"15", "16", true},
		{"16", "16", false},
		{"16", "16.1", true},
		{"beta", "9", true},
		{"9", "beta", false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.less, versionLess(tt.a, tt.b), "%s < %s", tt.a, tt.b)
	}
}
