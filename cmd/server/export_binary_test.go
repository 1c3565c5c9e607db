package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/testdb"
)

// runCLICode runs the binary and returns its exit code, standard output and both
// outputs together.
func runCLICode(t *testing.T, env []string, args ...string) (code int, stdout, all string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	// Two copiers write both at once: it must be a locked buffer.
	var (
		out  bytes.Buffer
		both syncBuffer
	)
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, &both), &both
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String(), both.String()
	}
	require.NoError(t, err)
	return 0, out.String(), both.String()
}

// fileHeader waits until data/credentials.json satisfies ok, and returns its header. The
// file is written by another process, so polling is the only way to see it.
func fileHeader(t *testing.T, dataDir, what string, ok func(credfile.Header) bool) credfile.Header {
	t.Helper()
	// The promise is "within 2 seconds", measured by make bench under load; a generous
	// deadline here keeps a loaded CI machine from failing a correct server.
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(dataDir, "credentials.json"))
		if err == nil {
			if h, err := credfile.ParseHeader(data); err == nil && ok(h) {
				return h
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: credentials.json not as expected within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExportRotateDoctorImportAgainstARunningServer drives the operator subcommands beside
// a running server: the file follows API writes, rotate-key leaves the server working,
// doctor judges permissions, and import restores into another database.
func TestExportRotateDoctorImportAgainstARunningServer(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	env := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL=" + testdb.URL(t), "LOOPZE_LOG_FORMAT=json"}
	s := start(t, env)
	s.waitReady(t)
	tok := runCLI(t, env, "token", "--tenant", "default", "--role", "editor")
	post := func(id string, validFor ...time.Duration) {
		life := 365 * 24 * time.Hour
		if len(validFor) > 0 {
			life = validFor[0]
		}
		ca := materialtest.NewCA(t, materialtest.Options{CommonName: id, NotAfter: time.Now().Add(life)})
		body, _ := json.Marshal(map[string]string{"id": id, "name": id, "type": "ca-bundle", "source": "inline",
			"certPem": string(materialtest.EncodeCert(ca.Cert))})
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/v1/certs", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode)
	}

	post("first-ca")
	h := fileHeader(t, dataDir, "after the first POST", func(h credfile.Header) bool { return h.Generation >= 1 })
	firstKey, firstMaster := h.KeyID, h.TenantKey.MasterKeyID

	// Neither LOOPZE_METRICS_TOKEN nor LOOPZE_METRICS_ADDR: the main listener's /metrics is
	// the build and the process, naming no tenant or entry (TestMetricsListenerAndFileRootsWarning
	// scrapes the per-entry series with the token).
	resp, err := http.Get("http://" + s.addr + "/metrics")
	require.NoError(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(metrics), `loopze_build_info{`)
	require.Contains(t, string(metrics), `process_resident_memory_bytes`)
	require.NotContains(t, string(metrics), `tenant=`)
	require.NotContains(t, string(metrics), `id=`)
	require.NotContains(t, string(metrics), `first-ca`)

	out := runCLI(t, env, "export")
	require.Contains(t, out, "default")
	require.Contains(t, out, filepath.Join(dataDir, "credentials.json"))
	out = runCLI(t, env, "export", "--json")
	var exports struct {
		Exports []struct {
			Tenant, File string
			Generation   int64
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &exports), out)
	require.Len(t, exports.Exports, 1)
	require.Equal(t, "default", exports.Exports[0].Tenant)
	require.Equal(t, filepath.Join(dataDir, "credentials.json"), exports.Exports[0].File)
	out = runCLI(t, env, "migrate", "status", "--json")
	var migrations struct {
		Migrations []struct {
			Version int64
			Applied bool
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &migrations), out)
	require.NotEmpty(t, migrations.Migrations)
	for _, m := range migrations.Migrations {
		require.True(t, m.Applied, "migration %d", m.Version)
	}

	code, _, all := runCLICode(t, env, "doctor")
	require.Equal(t, 0, code, all)

	// An entry expiring within 30 days is a warning: printed, exit 0, unless asked to fail.
	post("short-lived", 10*24*time.Hour)
	fileHeader(t, dataDir, "after the short-lived POST", func(h credfile.Header) bool { return h.Generation >= 2 })
	code, out, all = runCLICode(t, env, "doctor")
	require.Equal(t, 0, code, all)
	require.Contains(t, out, "default/short-lived")
	require.Contains(t, out, "warning(s)")
	code, _, all = runCLICode(t, env, "doctor", "--fail-on-warning")
	require.Equal(t, 1, code, all)

	// Rotate the master key under the running server; it hears of it, reloads, and
	// exports a later change with the tenant's key (unchanged) wrapped under the new master
	// key in the file's header.
	out = runCLI(t, env, "rotate-key")
	require.Contains(t, out, "rotated")
	require.NoFileExists(t, filepath.Join(dataDir, envelope.NextKeyFile))
	post("second-ca")
	h = fileHeader(t, dataDir, "after rotation and a POST", func(h credfile.Header) bool {
		return h.TenantKey.MasterKeyID != firstMaster && h.KeyID == firstKey && h.Generation >= 3
	})
	// The tenant's key rotates too: the running server seals under the new version.
	out = runCLI(t, env, "rotate-key", "--tenant", "default")
	require.Contains(t, out, "key of tenant default rotated")
	post("third-ca")
	h = fileHeader(t, dataDir, "after the tenant's rotation and a POST", func(h credfile.Header) bool {
		return h.TenantKey.Version == 2 && h.KeyID != firstKey && h.Generation >= 4
	})
	code, out, all = runCLICode(t, env, "doctor", "--json")
	require.Equal(t, 0, code, all)
	var rep struct{ OK bool }
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.True(t, rep.OK)

	// A key file readable by others: doctor fails.
	require.NoError(t, os.Chmod(filepath.Join(dataDir, envelope.KeyFile), 0o644))
	code, out, _ = runCLICode(t, env, "doctor")
	require.Equal(t, 1, code)
	require.Contains(t, out, "chmod 600")
	require.NoError(t, os.Chmod(filepath.Join(dataDir, envelope.KeyFile), 0o600))

	// Restore the file into another database and data directory, opening it with its key.
	other := []string{"LOOPZE_DATA_DIR=" + filepath.Join(t.TempDir(), "data2"), "LOOPZE_DATABASE_URL=" + testdb.URL(t)}
	out = runCLI(t, other, "import", "--tenant", "default", "--file", filepath.Join(dataDir, "credentials.json"),
		"--key", filepath.Join(dataDir, envelope.KeyFile))
	require.Contains(t, out, "4 entries")
	code, _, all = runCLICode(t, other, "import", "--tenant", "default", "--file", filepath.Join(dataDir, "credentials.json"),
		"--key", filepath.Join(dataDir, envelope.KeyFile))
	require.Equal(t, 1, code)
	require.Contains(t, all, "not empty")

	s.stop(t, syscall.SIGTERM)
	require.NotContains(t, s.stderr.String(), "-----BEGIN")
	require.False(t, strings.Contains(s.stderr.String(), `"level":"ERROR"`), s.stderr.String())
}
