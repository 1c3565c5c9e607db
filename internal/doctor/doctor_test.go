package doctor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/doctor"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type fixture struct {
	pool    *pgxpool.Pool
	doctor  *doctor.Doctor
	catalog *catalog.Service
	export  *fileexport.Exporter
	dataDir string
	fileDir string
}

func s(v string) *string { return &v }

// healthy is a store with an inline pair, a file pair valid for a year, and current files.
func healthy(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	pool, err := db.Open(ctx, testdb.URL(t), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	keys := tenantkeytest.New(t, pool, dir)
	f := &fixture{
		pool: pool,
		// Tenants other than the default read files only inside LOOPZE_FILE_ROOTS.
		doctor:  &doctor.Doctor{Pool: pool, DataDir: dir, Roots: material.Roots{os.TempDir()}, MasterKey: tenantkeytest.Source(t, dir)},
		catalog: &catalog.Service{Pool: pool, Keys: keys, Roots: material.Roots{os.TempDir()}, Logger: slog.New(slog.DiscardHandler)},
		export:  &fileexport.Exporter{Pool: pool, Keys: keys, DataDir: dir},
		dataDir: dir, fileDir: t.TempDir(),
	}
	year := materialtest.Options{NotAfter: time.Now().Add(365 * 24 * time.Hour)}
	cert, key := materialtest.Pair(t, year)
	_, err = f.catalog.Create(ctx, "acme", catalog.Input{ID: "inline", Name: s("inline"), Type: s("client-pair"),
		Source: s("inline"), CertPEM: cert, KeyPEM: key})
	require.NoError(t, err)
	cert, key = materialtest.Pair(t, year)
	certPath := materialtest.WriteFile(t, f.fileDir, "c.pem", cert)
	keyPath := materialtest.WriteFile(t, f.fileDir, "k.pem", key)
	_, err = f.catalog.Create(ctx, "acme", catalog.Input{ID: "onfile", Name: s("on file"), Type: s("client-pair"),
		Source: s("file"), CertPath: &certPath, KeyPath: &keyPath})
	require.NoError(t, err)
	_, err = f.export.ExportAll(ctx, false)
	require.NoError(t, err)
	return f
}

func (f *fixture) entry(t *testing.T, id string, notAfter time.Time) {
	t.Helper()
	cert, _ := materialtest.Pair(t, materialtest.Options{NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter})
	_, err := f.catalog.Create(context.Background(), "acme", catalog.Input{ID: id, Name: s(id), Type: s("ca-bundle"),
		Source: s("inline"), CertPEM: cert})
	require.NoError(t, err)
}

func (f *fixture) reexport(t *testing.T) {
	t.Helper()
	_, err := f.export.ExportAll(context.Background(), false)
	require.NoError(t, err)
}

// keysNow opens the master key as `loopze-certs doctor` does, after a case broke the
// store: a missing key file is an error, not a new key.
func keysNow(t *testing.T, pool *pgxpool.Pool, dir string) (*tenantkey.Keys, error) {
	t.Helper()
	uri := tenantkeytest.URIOf(dir)
	if uri == "" {
		if _, err := os.Stat(filepath.Join(dir, envelope.KeyFile)); err != nil {
			return nil, err
		}
	}
	master, err := tenantkeytest.Open(uri, dir, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = master.Close() })
	return &tenantkey.Keys{Pool: pool, Master: master}, nil
}

// keyFileOnly skips a case about the master key file when the tests keep the master key
// in a token.
func keyFileOnly(t *testing.T) {
	if tenantkeytest.InToken() {
		t.Skip("the master key is in a token: no key file")
	}
}

func TestDoctor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		break_  func(t *testing.T, f *fixture)
		check   string
		status  doctor.Status
		subject string
	}{
		{"healthy", func(*testing.T, *fixture) {}, "", doctor.OK, ""},
		{"key file 0644", func(t *testing.T, f *fixture) {
			keyFileOnly(t)
			require.NoError(t, os.Chmod(filepath.Join(f.dataDir, "loopze.key"), 0o644))
		}, "key-file", doctor.Fail, "loopze.key"},
		{"credentials file 0640", func(t *testing.T, f *fixture) {
			require.NoError(t, os.Chmod(filepath.Join(f.dataDir, "tenants", "acme", "credentials.json"), 0o640))
		}, "credentials-file", doctor.Warn, "credentials.json"},
		{"file behind the database", func(t *testing.T, f *fixture) {
			f.entry(t, "later", time.Now().Add(365*24*time.Hour))
		}, "credentials-file", doctor.Fail, "credentials.json"},
		{"file missing", func(t *testing.T, f *fixture) {
			require.NoError(t, os.Remove(filepath.Join(f.dataDir, "tenants", "acme", "credentials.json")))
		}, "credentials-file", doctor.Fail, "credentials.json"},
		{"file damaged", func(t *testing.T, f *fixture) {
			require.NoError(t, os.WriteFile(filepath.Join(f.dataDir, "tenants", "acme", "credentials.json"), []byte("{}"), 0o600))
		}, "credentials-file", doctor.Fail, "credentials.json"},
		{"key missing", func(t *testing.T, f *fixture) {
			keyFileOnly(t)
			require.NoError(t, os.Remove(filepath.Join(f.dataDir, "loopze.key")))
		}, "key", doctor.Fail, ""},
		{"another key", func(t *testing.T, f *fixture) {
			keyFileOnly(t)
			path := filepath.Join(f.dataDir, "loopze.key")
			require.NoError(t, os.Remove(path))
			key, err := envelope.GenerateKey()
			require.NoError(t, err)
			require.NoError(t, envelope.WriteKeyFile(path, key))
		}, "rows", doctor.Fail, "acme"},
		{"file material gone", func(t *testing.T, f *fixture) {
			require.NoError(t, os.RemoveAll(f.fileDir))
		}, "file-material", doctor.Fail, "acme/onfile"},
		{"expired entry", func(t *testing.T, f *fixture) {
			f.entry(t, "old", time.Now().Add(-time.Hour))
			f.reexport(t)
		}, "expiry", doctor.Warn, "acme/old"},
		{"entry expiring in 10 days", func(t *testing.T, f *fixture) {
			f.entry(t, "soon", time.Now().Add(10*24*time.Hour))
			f.reexport(t)
		}, "expiry", doctor.Warn, "acme/soon"},
		{"file roots unset with a tenant other than the default", func(t *testing.T, f *fixture) {
			f.doctor.Roots = nil
		}, "file-roots", doctor.Warn, "LOOPZE_FILE_ROOTS"},
		{"rotation interrupted", func(t *testing.T, f *fixture) {
			keyFileOnly(t)
			key, err := envelope.GenerateKey()
			require.NoError(t, err)
			require.NoError(t, envelope.WriteKeyFile(filepath.Join(f.dataDir, "loopze.key.next"), key))
		}, "key-file", doctor.Warn, "loopze.key.next"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := healthy(t)
			tc.break_(t, f)
			f.doctor.Keys, f.doctor.KeysErr = keysNow(t, f.pool, f.dataDir)
			rep := f.doctor.Run(context.Background())
			if tc.status == doctor.OK {
				require.True(t, rep.OK, "%+v", rep.Checks)
				return
			}
			// Only a failure makes the report not OK; warnings are counted.
			require.Equal(t, rep.Failures == 0, rep.OK, "%+v", rep.Checks)
			if tc.status == doctor.Warn {
				require.Positive(t, rep.Warnings)
			} else {
				require.Positive(t, rep.Failures)
			}
			found := false
			for _, c := range rep.Checks {
				if c.Check == tc.check && c.Status == tc.status && bytes.Contains([]byte(c.Subject), []byte(tc.subject)) {
					found = true
				}
			}
			require.True(t, found, "want a %s %s about %s in %+v", tc.status, tc.check, tc.subject, rep.Checks)
		})
	}
}

func TestReportOutputs(t *testing.T) {
	t.Parallel()
	keyFileOnly(t)
	f := healthy(t)
	require.NoError(t, os.Chmod(filepath.Join(f.dataDir, "loopze.key"), 0o644))
	f.doctor.Keys, f.doctor.KeysErr = keysNow(t, f.pool, f.dataDir)
	rep := f.doctor.Run(context.Background())

	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back doctor.Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, rep, back)
	require.False(t, back.OK)

	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table, false))
	require.Contains(t, table.String(), "chmod 600")
	require.Contains(t, table.String(), "problems found")
	require.NotContains(t, table.String(), "\nok ")
	require.NotContains(t, table.String(), "-----BEGIN")
}

// TestFileRootsFindingNeedsAnotherTenant: a single-tenant installation without
// LOOPZE_FILE_ROOTS is what the operator documentation describes, and no finding; the
// first tenant other than the default makes it one.
func TestFileRootsFindingNeedsAnotherTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.Open(ctx, testdb.URL(t), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	keys := tenantkeytest.New(t, pool, dir)
	cat := &catalog.Service{Pool: pool, Keys: keys, Logger: slog.New(slog.DiscardHandler)}
	cert, key := materialtest.Pair(t, materialtest.Options{NotAfter: time.Now().Add(365 * 24 * time.Hour)})
	certPath := materialtest.WriteFile(t, t.TempDir(), "c.pem", cert)
	keyPath := materialtest.WriteFile(t, t.TempDir(), "k.pem", key)
	_, err = cat.Create(ctx, material.DefaultTenant, catalog.Input{ID: "onfile", Name: s("on file"), Type: s("client-pair"),
		Source: s("file"), CertPath: &certPath, KeyPath: &keyPath})
	require.NoError(t, err)
	export := &fileexport.Exporter{Pool: pool, Keys: keys, DataDir: dir}
	_, err = export.ExportAll(ctx, false)
	require.NoError(t, err)

	d := &doctor.Doctor{Pool: pool, DataDir: dir, Keys: keys, MasterKey: tenantkeytest.Source(t, dir)}
	rep := d.Run(ctx)
	require.True(t, rep.OK, "%+v", rep.Checks)

	_, err = cat.Create(ctx, "globex", catalog.Input{ID: "ca", Name: s("ca"), Type: s("ca-bundle"), Source: s("inline"), CertPEM: cert})
	require.NoError(t, err)
	_, err = export.ExportAll(ctx, false)
	require.NoError(t, err)
	rep = d.Run(ctx)
	require.True(t, rep.OK, "a warning leaves the report OK: %+v", rep.Checks)
	require.Equal(t, 1, rep.Warnings, "%+v", rep.Checks)
	var found []doctor.Check
	for _, c := range rep.Checks {
		if c.Check == "file-roots" {
			found = append(found, c)
		}
	}
	require.Len(t, found, 1, "%+v", rep.Checks)
	require.Contains(t, found[0].Message, "globex")
	require.Contains(t, found[0].Message, "/etc/loopze/certs/{tenant}")
}
