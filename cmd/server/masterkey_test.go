package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/config"
)

// TestMasterKeySourceAcceptsTheDataDirectorysKey: serve takes the default URI, and a file:
// URI spelling the data directory's loopze.key absolutely when the data directory is
// relative; it refuses the same file name in another directory.
func TestMasterKeySourceAcceptsTheDataDirectorysKey(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	noEnv := func(string) string { return "" }
	cfg := config.FromEnv(func(k string) string { return map[string]string{config.EnvDataDir: "data"}[k] })
	require.NoError(t, checkMasterKeySource(cfg, noEnv))
	cfg.MasterKeyURI = "file:" + filepath.Join(dir, "data", "loopze.key")
	require.NoError(t, checkMasterKeySource(cfg, noEnv))
	cfg.MasterKeyURI = "file:" + filepath.Join(dir, "elsewhere", "loopze.key")
	require.ErrorContains(t, checkMasterKeySource(cfg, noEnv), "per-tenant keys")
	_, err := os.Stat(filepath.Join(dir, "data"))
	require.ErrorIs(t, err, os.ErrNotExist, "the check creates nothing")
}
