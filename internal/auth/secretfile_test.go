package auth

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadHMACSecretCreatesAndReuses(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data") // does not exist yet
	first, err := LoadHMACSecret("", dir)
	require.NoError(t, err)

	path := filepath.Join(dir, SecretFileName)
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	raw, err := base64.StdEncoding.DecodeString(string(first))
	require.NoError(t, err)
	require.Len(t, raw, 32)

	second, err := LoadHMACSecret("", dir)
	require.NoError(t, err)
	require.Equal(t, first, second)

	// No temporary files are left behind.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// The secret round-trips through the environment variable.
	fromEnv, err := LoadHMACSecret(string(first), t.TempDir())
	require.NoError(t, err)
	require.Equal(t, first, fromEnv)
}

func TestLoadHMACSecretEnvWins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := strings.Repeat("e", 40)
	s, err := LoadHMACSecret(env, dir)
	require.NoError(t, err)
	require.Equal(t, []byte(env), []byte(s))
	_, err = os.Stat(filepath.Join(dir, SecretFileName))
	require.ErrorIs(t, err, os.ErrNotExist, "no file is created when the variable is set")

	_, err = LoadHMACSecret("short-secret", dir)
	require.ErrorIs(t, err, ErrWeakSecret)
	require.NotContains(t, err.Error(), "short-secret")
}

func TestLoadHMACSecretConcurrentAgree(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		secrets = make([][]byte, n)
		errs    = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			s, err := LoadHMACSecret("", dir)
			secrets[i], errs[i] = s, err
		})
	}
	close(start)
	wg.Wait()
	onDisk, err := os.ReadFile(filepath.Join(dir, SecretFileName))
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, strings.TrimSpace(string(onDisk)), string(secrets[i]))
	}
}

func TestLoadHMACSecretRefusesBadFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content, want string
		mode                os.FileMode
	}{
		{"world readable", strings.Repeat("s", 44), "chmod 600", 0o644},
		{"group readable", strings.Repeat("s", 44), "chmod 600", 0o640},
		{"too short", "tiny-secret-value\n", "shorter than", 0o600},
		{"empty", "", "shorter than", 0o600},
		{"too large", strings.Repeat("s", 5000), "larger than", 0o600},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, SecretFileName)
		require.NoError(t, os.WriteFile(path, []byte(tc.content), tc.mode))
		require.NoError(t, os.Chmod(path, tc.mode))
		_, err := LoadHMACSecret("", dir)
		require.ErrorContains(t, err, tc.want, tc.name)
		require.Contains(t, err.Error(), path, tc.name)
		if tc.content != "" {
			require.NotContains(t, err.Error(), strings.TrimSpace(tc.content)[:8], tc.name)
		}
	}
}

func TestLoadHMACSecretAcceptsOperatorFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	content := strings.Repeat("k", 48)
	require.NoError(t, os.WriteFile(filepath.Join(dir, SecretFileName), []byte("  "+content+"\n\n"), 0o600))
	s, err := LoadHMACSecret("", dir)
	require.NoError(t, err)
	require.Equal(t, content, string(s))
}
