package fileexport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) {
	if os.Getenv(envCrashHelper) != "" {
		os.Exit(runCrashHelper())
	}
	testdb.Main(m)
}

// testLogger discards unless -v, where it shows in the test output.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = tlogWriter{}

// bundle is one database with a data directory, a master key, the tenant keys under it and
// a catalogue over them.
type bundle struct {
	url     string
	pool    *pgxpool.Pool
	dataDir string
	keys    *tenantkey.Keys
	catalog *catalog.Service
}

func setup(t *testing.T) *bundle {
	t.Helper()
	url := testdb.URL(t)
	return setupOn(t, url)
}

// setupOn opens a pool on url with a fresh data directory (and master key).
func setupOn(t testing.TB, url string) *bundle {
	t.Helper()
	ctx := context.Background()
	logger := testLogger(t)
	pool, err := db.Open(ctx, url, logger)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dataDir := t.TempDir()
	keys := tenantkeytest.New(t, pool, dataDir)
	return &bundle{url: url, pool: pool, dataDir: dataDir, keys: keys,
		// Tenants other than the default read files only inside LOOPZE_FILE_ROOTS.
		catalog: &catalog.Service{Pool: pool, Keys: keys, Roots: material.Roots{os.TempDir()}, Logger: logger}}
}

func (b *bundle) exporter(t *testing.T) *Exporter {
	return &Exporter{Pool: b.pool, Keys: b.keys, DataDir: b.dataDir, Logger: testLogger(t)}
}

// ring is tenant's sealing ring.
func (b *bundle) ring(t testing.TB, tenant string) *envelope.Ring {
	t.Helper()
	ring, err := b.keys.Ring(context.Background(), tenant)
	require.NoError(t, err)
	return ring
}

// opener opens files with this bundle's master key, as `import` without --key does.
func (b *bundle) opener() *credfile.Keys {
	o := b.keys.Opener()
	return &o
}

func ptr(s string) *string { return &s }

// createInline stores an inline entry of kind ("client-pair", "ca-bundle", ...).
func (b *bundle) createInline(t *testing.T, tenant, id, kind string) *repo.Entry {
	t.Helper()
	cert, key := materialtest.Pair(t, materialtest.Options{CommonName: id})
	in := catalog.Input{ID: id, Name: ptr("entry " + id), Type: ptr(kind), Source: ptr("inline"),
		Notes: ptr("notes of " + id), CertPEM: cert}
	if kind != "ca-bundle" {
		in.KeyPEM = key
	}
	res, err := b.catalog.Create(context.Background(), tenant, in)
	require.NoError(t, err)
	return res.Entry
}

// createFile stores a file-sourced client pair whose files live in dir.
func (b *bundle) createFile(t *testing.T, tenant, id, dir string) *repo.Entry {
	t.Helper()
	cert, key := materialtest.Pair(t, materialtest.Options{CommonName: id})
	certPath := materialtest.WriteFile(t, dir, id+".crt", cert)
	keyPath := materialtest.WriteFile(t, dir, id+".key", key)
	res, err := b.catalog.Create(context.Background(), tenant, catalog.Input{ID: id, Name: ptr(id),
		Type: ptr("client-pair"), Source: ptr("file"), CertPath: &certPath, KeyPath: &keyPath})
	require.NoError(t, err)
	return res.Entry
}

// deploy stores a workspace, references and node secrets the way a deploy does (one
// transaction, generation bumped), with the restore functions of repo.
func (b *bundle) deploy(t *testing.T, tenant string, refs []repo.Reference, creds map[string]string) {
	t.Helper()
	ctx := context.Background()
	var rows []repo.NodeSecret
	for k, v := range creds {
		node, name, _ := strings.Cut(k, "/")
		ring := b.ring(t, tenant)
		sealed, err := ring.Seal([]byte(v), sealing.NodeSecret(tenant, node, name))
		require.NoError(t, err)
		rows = append(rows, repo.NodeSecret{NodeID: node, Name: name, Sealed: sealed, KeyID: ring.CurrentKeyID()})
	}
	flows := fmt.Sprintf(`{"flows":[{"id":"f1","label":"line","nodes":[{"id":"n1","type":"tcp-out","tls":{"caBundleRef":%q}}]}]}`, refs[0].EntryID)
	require.NoError(t, db.InTenant(ctx, b.pool, tenant, func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(ctx, tx, tenant); err != nil {
			return err
		}
		if err := repo.ImportWorkspace(ctx, tx, tenant, []byte(flows)); err != nil {
			return err
		}
		if err := repo.ImportReferences(ctx, tx, tenant, refs); err != nil {
			return err
		}
		return repo.ImportNodeSecrets(ctx, tx, tenant, rows)
	}))
}

// readDoc opens tenant's file in dir with keys' master key.
func readDoc(t *testing.T, keys *tenantkey.Keys, dir, tenant string) (*credfile.Document, credfile.Header) {
	t.Helper()
	data, err := os.ReadFile(credfile.Path(dir, tenant))
	require.NoError(t, err)
	doc, h, err := credfile.Open(keys.Opener(), data, tenant)
	require.NoError(t, err)
	return doc, h
}

func entryByID(doc *credfile.Document, id string) *credfile.Entry {
	for i := range doc.Entries {
		if doc.Entries[i].ID == id {
			return &doc.Entries[i]
		}
	}
	return nil
}
