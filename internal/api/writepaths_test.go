package api_test

import (
	"context"
	"net/http"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/opcua"
	"github.com/loopze/certstore/internal/repo"
)

// TestEveryWritePathKeepsTheSameInvariants runs each way an entry gets written (create
// over the API, PUT that creates, PUT that updates, a restore of a version, an import of a
// backup, the OPC UA migration) and checks after each what every write must leave: the
// field rules were applied, the entry's history grew by one version, the audit trail by
// one record about it, the tenant's generation moved, and the export has the entry as
// written.
func TestEveryWritePathKeepsTheSameInvariants(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{FileRoots: os.TempDir()})
	ctx := context.Background()
	const tenant = "acme"
	editor, admin := env.Token(t, tenant, "editor"), env.Token(t, tenant, "admin")
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Root"})

	type state struct {
		versions, records int
		generation        int64
	}
	read := func(id string) state {
		t.Helper()
		var s state
		res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/" + id + "/versions", Token: editor})
		if res.Status == http.StatusOK {
			s.versions = len(res.JSON(t)["items"].([]any))
		}
		res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit?target=" + audit.EntryTarget(id), Token: admin})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		s.records = len(res.JSON(t)["items"].([]any))
		var err error
		s.generation, err = repo.GetGeneration(ctx, env.Pool, tenant)
		require.NoError(t, err)
		return s
	}
	// check runs one write of entry id and holds it to the invariants; notes is what the
	// entry's notes must be afterwards, in the database and in the exported file.
	check := func(path, id, notes string, write func()) {
		t.Helper()
		before := read(id)
		write()
		after := read(id)
		require.Equal(t, before.versions+1, after.versions, "%s: one version", path)
		require.Equal(t, before.records+1, after.records, "%s: one audit record", path)
		require.Greater(t, after.generation, before.generation, "%s: the generation moved", path)
		e, err := env.Catalog.Get(ctx, tenant, id)
		require.NoError(t, err, path)
		require.Equal(t, notes, e.Notes, path)
		env.Export(t, tenant)
		doc := readCredentials(t, env, tenant)
		var found *credfile.Entry
		for i := range doc.Entries {
			if doc.Entries[i].ID == id {
				found = &doc.Entries[i]
			}
		}
		require.NotNil(t, found, "%s: the export has the entry", path)
		require.Equal(t, notes, found.Notes, "%s: the export has what was written", path)
	}
	// refused runs a write that breaks a field rule: a 422 (or the import's refusal), and
	// nothing written.
	badNotes := []string{"-----BEGIN PRIVATE KEY-----", "bell\x07", "flip\u202Eflop"}
	refused := func(path, id string, write func(notes string)) {
		t.Helper()
		for _, notes := range badNotes {
			before := read(id)
			write(notes)
			require.Equal(t, before, read(id), "%s with notes %q changed something", path, notes)
		}
	}

	// API create.
	body := inlineCA("root", ca)
	refused("POST", "root", func(notes string) {
		b := inlineCA("root", ca)
		b["notes"] = notes
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editor, Body: b})
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	})
	body["notes"] = "created"
	check("POST", "root", "created", func() {
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: editor, Body: body})
		require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	})

	// PUT that creates.
	refused("PUT-create", "put-root", func(notes string) {
		b := inlineCA("put-root", ca)
		b["notes"] = notes
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/put-root", Token: editor, Body: b})
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	})
	check("PUT-create", "put-root", "put-created", func() {
		b := inlineCA("put-root", ca)
		b["notes"] = "put-created"
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/put-root", Token: editor, Body: b})
		require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	})

	// PUT that updates.
	refused("PUT", "root", func(notes string) {
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: editor, Body: obj{"notes": notes}})
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	})
	check("PUT", "root", "updated", func() {
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: editor, Body: obj{"notes": "updated"}})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	})

	// A restore of the first version.
	check("restore", "root", "created", func() {
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/root/versions/1/restore", Token: editor})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	})

	// An import of a backup into an empty tenant: each entry is written as a create.
	src := env.Token(t, "source", "editor")
	b := inlineCA("imported", ca)
	b["notes"] = "from the backup"
	require.Equal(t, http.StatusCreated, env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: src, Body: b}).Status)
	env.Export(t, "source")
	backup, err := os.ReadFile(credfile.Path(env.DataDir, "source"))
	require.NoError(t, err)
	im := &fileexport.Importer{Pool: env.Pool, Catalog: env.Catalog, Keys: env.Keys, Logger: env.Logger}
	check("import", "imported", "from the backup", func() {
		_, err := im.Import(ctx, backup, fileexport.ImportOptions{Tenant: tenant, FileTenant: "source", Replace: true})
		require.NoError(t, err)
	})

	// An import refuses what the API refuses, and stores nothing of the file.
	refused("import", "smuggled", func(notes string) {
		doc := readCredentials(t, env, "source")
		doc.Entries[0].ID, doc.Entries[0].Notes = "smuggled", notes
		fk, err := env.Keys.FileKey(ctx, "source")
		require.NoError(t, err)
		data, _, err := credfile.Seal(fk, doc)
		require.NoError(t, err)
		_, err = im.Import(ctx, data, fileexport.ImportOptions{Tenant: tenant, FileTenant: "source", Replace: true})
		require.ErrorIs(t, err, fileexport.ErrInvalidDocument)
		require.ErrorIs(t, err, catalog.ErrInvalid)
		_, err = env.Catalog.Get(ctx, tenant, "imported")
		require.NoError(t, err, "a refused import keeps what the tenant had")
	})

	// The OPC UA migration creates a file entry for a legacy opcua-server node.
	pair := ca.Issue(t, materialtest.Options{CommonName: "plc"})
	dir := t.TempDir()
	certPath := apitest.WriteFile(t, dir, "plc.crt", pair.ChainPEM())
	keyPath := apitest.WriteFile(t, dir, "plc.key", pair.KeyPEM())
	res := deploy(t, env, editor, workspaceOf(flow("plant", node("plc-a", "opcua-server",
		obj{"endpoint": "opc.tcp://plc-a:4840", "clientCertFile": certPath, "clientKeyFile": keyPath}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	id := opcua.EntryID("plc-a")
	check("OPC UA migration", id, "Created by the OPC UA migration from the clientCertFile/clientKeyFile of opcua-server node plc-a.", func() {
		m := &opcua.Migrator{Pool: env.Pool, Catalog: env.Catalog, Workspace: env.Workspace, Logger: env.Logger}
		got, err := m.Run(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, got.Migrated)
	})
}

// readCredentials opens tenant's exported credentials.json.
func readCredentials(t *testing.T, env *apitest.Env, tenant string) *credfile.Document {
	t.Helper()
	data, err := os.ReadFile(credfile.Path(env.DataDir, tenant))
	require.NoError(t, err)
	doc, _, err := credfile.Open(env.Keys.Opener(), data, tenant)
	require.NoError(t, err)
	return doc
}
