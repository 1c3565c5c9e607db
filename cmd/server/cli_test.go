package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// runInProcess runs the binary's entry point with args and returns the exit code, stdout
// and stderr.
func runInProcess(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &environ{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
	code := run(context.Background(), env, args)
	return code, out.String(), errOut.String()
}

// TestHelpAndVersion: --help and -h list the commands on stdout, --version prints the
// version, help COMMAND shows that command's flags and no others.
func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, errOut := runInProcess(t, args...)
		require.Equal(t, 0, code, args)
		require.Empty(t, errOut, args)
		for name := range commands {
			require.Contains(t, out, "  "+name+" ", args)
		}
	}
	code, out, _ := runInProcess(t, "--version")
	require.Equal(t, 0, code)
	require.Equal(t, "loopze-certs "+version+"\n", out)

	code, out, errOut := runInProcess(t, "help", "doctor")
	require.Equal(t, 0, code)
	require.Empty(t, errOut)
	require.Contains(t, out, "usage: loopze-certs doctor")
	require.Contains(t, out, "Exit codes: 0 when no check failed")
	for _, flag := range []string{"-fail-on-warning", "-json", "-data-dir", "-database-url", "-file-roots"} {
		require.Contains(t, out, "  "+flag, "doctor uses %s", flag)
	}
	for _, flag := range []string{"-addr", "-secure-cookies", "-jwt-issuer", "-jwt-public-keys", "-rate-limit-tenant"} {
		require.NotContains(t, out, "  "+flag+" ", "doctor does not use %s", flag)
	}

	// Each subcommand shows only what it uses; serve shows the server's settings.
	_, out, _ = runInProcess(t, "token", "-h")
	require.Contains(t, out, "  -jwt-issuer")
	require.NotContains(t, out, "  -database-url")
	_, out, _ = runInProcess(t, "migrate", "--help")
	require.NotContains(t, out, "  -addr")
	require.Contains(t, out, "  -json")
	_, out, _ = runInProcess(t, "help", "serve")
	for _, flag := range []string{"-addr", "-secure-cookies", "-rate-limit-tenant", "-rate-limit-subject-burst"} {
		require.Contains(t, out, "  "+flag)
	}

	code, _, errOut = runInProcess(t, "help", "nonsense")
	require.Equal(t, 2, code)
	require.True(t, strings.Contains(errOut, `unknown command "nonsense"`))
}

// TestTokenLongerThanTheServerAccepts: `token` refuses a --ttl over LOOPZE_JWT_MAX_TTL
// (exit 2, naming the setting) instead of printing a token the server would refuse; the
// documented 720h runtime token is within the default.
func TestTokenLongerThanTheServerAccepts(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := runInProcess(t, "token", "--data-dir", dir, "--role", "runtime", "--ttl", "8760h")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "LOOPZE_JWT_MAX_TTL")
	code, out, errOut := runInProcess(t, "token", "--data-dir", dir, "--role", "runtime", "--ttl", "720h")
	require.Equal(t, 0, code, errOut)
	require.Len(t, strings.Split(strings.TrimSpace(out), "."), 3)
	code, out, errOut = runInProcess(t, "token", "--data-dir", dir, "--jwt-max-ttl", "9000h", "--ttl", "8760h")
	require.Equal(t, 0, code, errOut)
	require.NotEmpty(t, out)
	code, _, errOut = runInProcess(t, "token", "--data-dir", dir, "--jwt-max-ttl", "0s")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "LOOPZE_JWT_MAX_TTL")
}
