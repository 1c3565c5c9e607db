package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/testdb"
)

// binary is the loopze-certs built once for the black-box tests of this file.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "loopze-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "loopze-certs")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build loopze-certs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := testdb.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// reachableDir makes a directory the postgres user can pass through (t.TempDir is 0700
// and root-owned, which an embedded cluster run as postgres cannot enter).
func reachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loopze-e2e-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// server is one running loopze-certs process.
type server struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan error
}

// syncBuffer collects the server's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(binary, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), append([]string{"LOOPZE_ADDR=" + addr}, env...)...)
	stderr := &syncBuffer{}
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stderr = pw
	cmd.Stdout = pw
	require.NoError(t, cmd.Start())
	pw.Close()
	lines := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			_, _ = stderr.Write([]byte(sc.Text() + "\n"))
		}
		close(lines)
	}()
	s := &server{cmd: cmd, addr: addr, stderr: stderr, done: make(chan error, 1)}
	go func() { err := cmd.Wait(); <-lines; s.done <- err }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
	})
	return s
}

// waitReady polls /readyz until 200 or the deadline (the 20 s).
func (s *server) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			t.Fatalf("server exited before ready: %v\n%s", err, s.stderr.String())
		default:
		}
		resp, err := http.Get("http://" + s.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not ready within 20 s\n%s", s.stderr.String())
}

func (s *server) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, s.cmd.Process.Signal(sig))
	select {
	case err := <-s.done:
		if sig != syscall.SIGKILL {
			require.NoError(t, err, "%s", s.stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("server did not stop")
	}
}

// postmasterAlive reports whether a postmaster runs on the cluster dir.
func postmasterAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// TestEmbeddedLifecycle is `make run` as a newcomer meets it: zero configuration, data/pg
// created, Ctrl-C leaves no postgres, a second run reuses the cluster, and after kill -9
// of the server a third run still comes up.
func TestEmbeddedLifecycle(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(reachableDir(t), "data")
	env := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL="}
	pgDir := filepath.Join(dataDir, "pg")

	s := start(t, env)
	s.waitReady(t)
	require.DirExists(t, pgDir)
	require.FileExists(t, filepath.Join(dataDir, "loopze.key"))
	require.True(t, postmasterAlive(pgDir))
	// The embedded cluster logs in as a superuser: tenant isolation must hold all the same.
	requireTenantIsolation(t, env, s.addr)
	// A subcommand borrows the running server's cluster through its socket...
	out := runCLI(t, env, "migrate", "status")
	require.Contains(t, out, "00001_tenants.sql")
	require.NotContains(t, out, "pending")
	s.stop(t, syscall.SIGINT)
	require.False(t, postmasterAlive(pgDir), "Ctrl-C must leave no postgres running")
	// ...and starts it for its own duration when none runs.
	require.Contains(t, runCLI(t, env, "migrate", "up"), "applied 0 migration(s)")
	require.False(t, postmasterAlive(pgDir), "a subcommand stops the cluster it started")

	s = start(t, env)
	s.waitReady(t)
	require.NotContains(t, s.stderr.String(), "creating PostgreSQL cluster", "the second run reuses the cluster")
	s.stop(t, syscall.SIGKILL)

	s = start(t, env)
	s.waitReady(t)
	s.stop(t, syscall.SIGTERM)
	require.False(t, postmasterAlive(pgDir), "after recovering from kill -9, a clean stop leaves no postgres")
}

// TestExternalDatabaseAndSeedCalls runs against LOOPZE_DATABASE_URL: no data/pg is made,
// and the seed document's calls work against the running binary with a token it printed.
func TestExternalDatabaseAndSeedCalls(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	env := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL=" + testdb.URL(t), "LOOPZE_LOG_FORMAT=json"}
	s := start(t, env)
	s.waitReady(t)
	require.NoDirExists(t, filepath.Join(dataDir, "pg"))

	tok := runCLI(t, env, "token", "--tenant", "default", "--role", "editor", "--sub", "ci")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Internal Root CA"})
	body, _ := json.Marshal(map[string]string{"id": "internal-root-ca", "name": "Internal Root CA", "type": "ca-bundle",
		"source": "inline", "certPem": string(materialtest.EncodeCert(ca.Cert))})
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/v1/certs", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(&http.Cookie{Name: "loopze_session", Value: tok})
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	req, _ = http.NewRequest(http.MethodGet, "http://"+s.addr+"/api/v1/certs/internal-root-ca", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	resp.Body.Close()
	require.Equal(t, material.Fingerprint(ca.Cert), got["fingerprintSha256"])
	s.stop(t, syscall.SIGTERM)
	require.NotContains(t, s.stderr.String(), "-----BEGIN")
	require.NotContains(t, s.stderr.String(), tok)
}

func runCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// TestBadConfigurationExitsWithOneLine covers the mistakes an operator makes first.
func TestBadConfigurationExitsWithOneLine(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "a-file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	ok := filepath.Join(t.TempDir(), "data")
	badKey := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(badKey, "loopze.key"), []byte("not-base64-at-all!!\n"), 0o600))
	// A good key and a good secret, each readable by others.
	looseKey, looseSecret := t.TempDir(), t.TempDir()
	key, err := envelope.GenerateKey()
	require.NoError(t, err)
	require.NoError(t, envelope.WriteKeyFile(filepath.Join(looseKey, "loopze.key"), key))
	require.NoError(t, os.Chmod(filepath.Join(looseKey, "loopze.key"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(looseSecret, "jwt.secret"), []byte(strings.Repeat("s", 44)+"\n"), 0o640))
	looseNext := t.TempDir()
	require.NoError(t, envelope.WriteKeyFile(filepath.Join(looseNext, "loopze.key"), key))
	require.NoError(t, envelope.WriteKeyFile(filepath.Join(looseNext, "loopze.key.next"), key))
	require.NoError(t, os.Chmod(filepath.Join(looseNext, "loopze.key.next"), 0o604))
	// A systemd credential directory holding loopze.key, as LoadCredentialEncrypted= makes it.
	creds := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(creds, "loopze.key"), []byte("not a key\n"), 0o600))
	pkcs11URI := "pkcs11:token=loopze;object=master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=246813"

	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"unparsable database URL", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_DATABASE_URL=postgres://u:p@host:notaport/db"}, "LOOPZE_DATABASE_URL"},
		{"not a database URL", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_DATABASE_URL=mysql-please"}, "LOOPZE_DATABASE_URL"},
		{"unwritable data dir", []string{"LOOPZE_DATA_DIR=" + filepath.Join(file, "data")}, "data dir"},
		{"port in use", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_ADDR=" + busy.Addr().String()}, "address already in use"},
		{"bad listen address", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_ADDR=8080"}, "LOOPZE_ADDR"},
		{"bad log format", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_LOG_FORMAT=xml"}, "LOOPZE_LOG_FORMAT"},
		{"bad log level", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_LOG_LEVEL=loud"}, "LOOPZE_LOG_LEVEL"},
		{"malformed master key", []string{"LOOPZE_DATA_DIR=" + badKey}, "loopze.key"},
		{"short JWT secret", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_JWT_SECRET=short"}, "JWT"},
		{"relative file root", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_FILE_ROOTS=certs/{tenant}"}, "LOOPZE_FILE_ROOTS"},
		{"master key readable by others", []string{"LOOPZE_DATA_DIR=" + looseKey}, "chmod 600 " + filepath.Join(looseKey, "loopze.key")},
		{"next master key readable by others", []string{"LOOPZE_DATA_DIR=" + looseNext}, "chmod 600 " + filepath.Join(looseNext, "loopze.key.next")},
		{"JWT secret readable by group", []string{"LOOPZE_DATA_DIR=" + looseSecret}, "chmod 600 " + filepath.Join(looseSecret, "jwt.secret")},
		{"bad metrics address", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_METRICS_ADDR=9090"}, "LOOPZE_METRICS_ADDR"},
		{"metrics port in use", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_METRICS_ADDR=" + busy.Addr().String()}, "address already in use"},
		{"malformed master key URI", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_MASTER_KEY_URI=pkcs11:object=master?pin-value=246813"}, "LOOPZE_MASTER_KEY_URI"},
		// A master key that cannot be had is one line naming it, never a key made elsewhere.
		{"master key in a token that is not there", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_MASTER_KEY_URI=" + pkcs11URI}, "open master key pkcs11:"},
		{"master key in a file readable by others", []string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_MASTER_KEY_URI=file:" + filepath.Join(looseKey, "loopze.key")}, "open master key"},
		{"malformed master key in a systemd credential", []string{"LOOPZE_DATA_DIR=" + ok, "CREDENTIALS_DIRECTORY=" + creds}, "open master key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, "serve")
			cmd.Env = append(os.Environ(), c.env...)
			if !strings.Contains(strings.Join(c.env, " "), "LOOPZE_ADDR=") {
				cmd.Env = append(cmd.Env, "LOOPZE_ADDR="+freeAddr(t))
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "%s", stderr.String())
			require.Equal(t, 1, exit.ExitCode(), "%s", stderr.String())
			out := strings.TrimSpace(stderr.String())
			require.Equal(t, 1, strings.Count(out, "\n")+1, "one line, got:\n%s", out)
			require.Contains(t, out, c.want)
			require.NotContains(t, out, "goroutine")
			require.NotContains(t, out, ":p@", "a password must not be echoed")
			require.NotContains(t, out, "246813", "a PIN must not be echoed")
		})
	}
}

// requireTenantIsolation creates an entry as one tenant and checks another tenant can
// neither read it nor see it listed.
func requireTenantIsolation(t *testing.T, env []string, addr string) {
	t.Helper()
	a := runCLI(t, env, "token", "--tenant", "tenant-a", "--role", "editor")
	b := runCLI(t, env, "token", "--tenant", "tenant-b", "--role", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{})
	body, _ := json.Marshal(map[string]string{"id": "private-ca", "name": "A's CA", "type": "ca-bundle",
		"source": "inline", "certPem": string(materialtest.EncodeCert(ca.Cert))})
	call := func(method, path, token string, body []byte) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.String()
	}
	code, _ := call(http.MethodPost, "/api/v1/certs", a, body)
	require.Equal(t, http.StatusCreated, code)
	code, _ = call(http.MethodGet, "/api/v1/certs/private-ca", a, nil)
	require.Equal(t, http.StatusOK, code)
	code, _ = call(http.MethodGet, "/api/v1/certs/private-ca", b, nil)
	require.Equal(t, http.StatusNotFound, code)
	code, list := call(http.MethodGet, "/api/v1/certs", b, nil)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"items":[]}`, list)
	code, _ = call(http.MethodDelete, "/api/v1/certs/private-ca", b, nil)
	require.Equal(t, http.StatusNotFound, code)
}
