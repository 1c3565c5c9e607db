package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/credfile/credfiletest"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
	"github.com/loopze/certstore/nodetls"
)

// tlsPeer is a TLS server requiring a client certificate signed by ca; it completes the
// handshake and closes.
func tlsPeer(t *testing.T, ca *materialtest.Cert) string {
	t.Helper()
	srv := ca.Issue(t, materialtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Cert.Raw}, PrivateKey: srv.Key, Leaf: srv.Cert}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRuntimeBesideRunningServer drives the runtime side against the real binary: the
// package follows the server's exported file, resolve and probe report a node, a
// rotate-key under a runtime holding the file keeps it resolving, and the credentials
// route serves a runtime token and nothing else.
func TestRuntimeBesideRunningServer(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	env := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL=" + testdb.URL(t), "LOOPZE_LOG_FORMAT=json"}
	// With the tests' master keys in a token (scripts/test-hsm), the server and every
	// command keep theirs there, and no key file is written.
	if uri := tenantkeytest.URI(t, dataDir); uri != "" {
		env = append(env, "LOOPZE_MASTER_KEY_URI="+uri)
		defer func() {
			require.NoFileExists(t, filepath.Join(dataDir, "loopze.key"), "the master key is in the token")
		}()
	}
	s := start(t, env)
	s.waitReady(t)
	editor := runCLI(t, env, "token", "--tenant", "default", "--role", "editor")
	runtime := runCLI(t, env, "token", "--tenant", "default", "--role", "runtime")
	call := func(method, path, tok string, body any, want int) []byte {
		t.Helper()
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://"+s.addr+path, r)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		require.Equal(t, want, resp.StatusCode, "%s %s: %s", method, path, out)
		return out
	}
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Plant CA"})
	v1 := ca.Issue(t, materialtest.Options{CommonName: "edge-v1"})
	call(http.MethodPost, "/api/v1/certs", editor, map[string]string{"id": "plant-ca", "name": "Plant CA", "type": "ca-bundle",
		"source": "inline", "certPem": string(ca.CertPEM())}, http.StatusCreated)
	call(http.MethodPost, "/api/v1/certs", editor, map[string]string{"id": "edge", "name": "Edge", "type": "client-pair",
		"source": "inline", "certPem": string(v1.ChainPEM()), "keyPem": string(v1.KeyPEM())}, http.StatusCreated)
	call(http.MethodPut, "/api/v1/flows", editor, map[string]any{"flows": []any{map[string]any{"id": "line-1", "nodes": []any{
		map[string]any{"id": "tcp-out-1", "type": "tcp-out", "tls": map[string]any{"caBundleRef": "plant-ca", "clientCertRef": "edge", "serverName": "localhost"}},
	}}}}, http.StatusOK)

	// The runtime holds its tenant's runtime key, never the master key.
	file, key := filepath.Join(dataDir, "credentials.json"), filepath.Join(t.TempDir(), "default.runtime-key")
	require.Contains(t, runCLI(t, env, "runtime-key", "--tenant", "default", "--out", key), "versions 1 to 1")
	fi, err := os.Stat(key)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	code, _, all := runCLICode(t, env, "runtime-key", "--tenant", "default", "--out", key)
	require.Equal(t, 2, code, all)
	require.Contains(t, all, "--force replaces it")
	code, _, all = runCLICode(t, env, "runtime-key", "--tenant", "defualt", "--out", key+".typo")
	require.Equal(t, 2, code, all)
	require.Contains(t, all, "tenant defualt has nothing stored here")
	require.NoFileExists(t, key+".typo")
	var store *nodetls.Store
	require.Eventually(t, func() bool {
		st, err := nodetls.Open(file, key)
		if err != nil {
			return false
		}
		if _, err := st.Config(context.Background(), "line-1", "tcp-out-1"); err != nil {
			return false
		}
		store = st
		return true
	}, 15*time.Second, 20*time.Millisecond, "the deploy reaches credentials.json")
	peer := tlsPeer(t, ca)

	flags := []string{"--file", file, "--key", key, "--flow", "line-1", "--node", "tcp-out-1"}
	out := runCLI(t, env, append([]string{"resolve"}, flags...)...)
	require.Contains(t, out, "clientCert: tls.clientCertRef from entry edge (inline)")
	require.Contains(t, out, material.Fingerprint(v1.Cert))
	require.NotContains(t, out, "BEGIN")
	var rep struct {
		Resolves bool
		Parts    []nodetls.Part
	}
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, env, append([]string{"resolve", "--json"}, flags...)...)), &rep))
	require.True(t, rep.Resolves)
	require.Len(t, rep.Parts, 2)
	code, _, all = runCLICode(t, env, "resolve", "--file", file, "--key", key, "--flow", "line-1", "--node", "nope")
	require.Equal(t, 1, code)
	require.Contains(t, all, "flow line-1, node nope")

	code, out, all = runCLICode(t, env, append(append([]string{"probe"}, flags...), peer)...)
	require.Equal(t, 0, code, all)
	require.Contains(t, out, "verification     passed")
	require.Contains(t, out, "client cert      CN=edge-v1")
	require.Contains(t, out, "peer[0]          CN=localhost,O=LOOPZE Test (issuer CN=Plant CA", "the peer chain is printed")
	stranger := tlsPeer(t, materialtest.NewCA(t, materialtest.Options{CommonName: "Stranger CA"}))
	code, out, all = runCLICode(t, env, append(append([]string{"probe", "--json"}, flags...), stranger)...)
	require.Equal(t, 1, code, all)
	require.Contains(t, out, `"verified": false`)
	require.Contains(t, out, "unknown authority")

	// A master key rotation under a runtime that holds the file: its runtime key is
	// untouched, it keeps resolving, and the next change, exported after it, loads.
	before := store.Generation()
	require.Contains(t, runCLI(t, env, "rotate-key"), "1 tenant key(s) rewrapped")
	require.NoError(t, store.Refresh())
	_, err = store.Config(context.Background(), "line-1", "tcp-out-1")
	require.NoError(t, err)
	v2 := ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	call(http.MethodPut, "/api/v1/certs/edge", editor, map[string]string{"certPem": string(v2.ChainPEM()), "keyPem": string(v2.KeyPEM())}, http.StatusOK)
	require.Eventually(t, func() bool { return store.Refresh() == nil && store.Generation() > before }, 15*time.Second, 20*time.Millisecond)
	code, out, all = runCLICode(t, env, append(append([]string{"probe"}, flags...), peer)...)
	require.Equal(t, 0, code, all)
	require.Contains(t, out, "client cert      CN=edge-v2")

	// A tenant key rotation: the file moves to version 2, which the runtime's key lacks; it
	// keeps its last good snapshot and says so, until it is given its new runtime key.
	before = store.Generation()
	require.Contains(t, runCLI(t, env, "rotate-key", "--tenant", "default"), "loopze-certs runtime-key --tenant default")
	require.Eventually(t, func() bool { return errors.Is(store.Refresh(), nodetls.ErrUnknownKey) }, 15*time.Second, 20*time.Millisecond)
	require.ErrorContains(t, store.Err(), "version 2 of default's key")
	require.Equal(t, before, store.Generation())
	_, err = store.Config(context.Background(), "line-1", "tcp-out-1")
	require.NoError(t, err, "the last good snapshot keeps serving")
	require.Contains(t, runCLI(t, env, "runtime-key", "--tenant", "default", "--out", key, "--force"), "versions 1 to 2")
	require.NoError(t, store.Refresh())
	require.NoError(t, store.Err())
	require.Contains(t, runCLI(t, env, append([]string{"resolve"}, flags...)...), "clientCert: tls.clientCertRef from entry edge (inline)")

	// The route: the runtime token reads its file and nothing else.
	body := call(http.MethodGet, "/api/v1/credentials", runtime, nil, http.StatusOK)
	require.Contains(t, string(body), `"ciphertext"`)
	call(http.MethodGet, "/api/v1/certs", runtime, nil, http.StatusForbidden)
	call(http.MethodGet, "/api/v1/credentials", editor, nil, http.StatusForbidden)
	require.NotContains(t, s.stderr.String(), "BEGIN")
}

// TestResolveRefusesOlderGeneration: resolve (and probe, through the same store) took a
// copy of credentials.json at generation 2 put back over generation 3. Each run is a fresh
// start, so only the generation floor beside the file remembers 3: the copy is refused
// with both generations named, until the operator deletes the floor to roll back.
func TestResolveRefusesOlderGeneration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	master := make([]byte, 32)
	_, err := rand.Read(master)
	require.NoError(t, err)
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Plant CA"})
	file, key := filepath.Join(dir, credfile.FileName), filepath.Join(dir, "default.runtime-key")
	require.NoError(t, os.WriteFile(key, credfiletest.RuntimeKey(t, master, "default", 1), 0o600))
	write := func(gen int64) []byte {
		doc := &credfile.Document{Tenant: "default", Generation: gen,
			Entries:   []credfile.Entry{{ID: "plant-ca", Type: "ca-bundle", Source: "inline", CertPEM: string(ca.CertPEM())}},
			Workspace: []byte(`{"flows":[{"id":"line-1","nodes":[{"id":"tcp-out-1","type":"tcp-out","tls":{"caBundleRef":"plant-ca"}}]}]}`)}
		data := credfiletest.Seal(t, master, doc)
		require.NoError(t, fileexport.WriteAtomic(file, data))
		return data
	}
	flags := []string{"--file", file, "--key", key, "--flow", "line-1", "--node", "tcp-out-1"}
	gen2 := write(2)
	require.Contains(t, runCLI(t, nil, append([]string{"resolve"}, flags...)...), "generation 2")
	write(3)
	require.Contains(t, runCLI(t, nil, append([]string{"resolve"}, flags...)...), "generation 3")

	require.NoError(t, fileexport.WriteAtomic(file, gen2))
	floor := file + ".floor"
	for _, cmd := range [][]string{append([]string{"resolve"}, flags...), append(append([]string{"probe"}, flags...), "127.0.0.1:1")} {
		code, out, all := runCLICode(t, nil, cmd...)
		require.Equal(t, 1, code, all)
		require.NotContains(t, out, "caBundle", "nothing is resolved from the older file")
		require.Contains(t, all, "older than one already accepted")
		require.Contains(t, all, "generation 2, while generation 3 was accepted here before")
		require.Contains(t, all, floor)
	}

	require.NoError(t, os.Remove(floor))
	require.Contains(t, runCLI(t, nil, append([]string{"resolve"}, flags...)...), "generation 2", "rolled back on purpose")
}
