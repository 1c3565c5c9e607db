package opcua_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/opcua"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestEntryID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 70)
	cases := []struct {
		node, want string
	}{
		{"plc-1", "opcua-plc-1"},
		{"a1b2_c3", "opcua-a1b2_c3"},
		{strings.Repeat("b", 58), "opcua-" + strings.Repeat("b", 58)},
		{"7f3a.9b21", "opcua-7f3a-9b21-"},
		{"PLC-1", "opcua-plc-1-"},
		{"Line 3 / PLC..é", "opcua-line-3-plc-"},
		{long, "opcua-" + strings.Repeat("a", 49) + "-"},
		{"...", "opcua-"},
	}
	seen := map[string]string{}
	for _, c := range cases {
		got := opcua.EntryID(c.node)
		require.True(t, catalog.ValidID(got), "%q -> %q", c.node, got)
		require.True(t, strings.HasPrefix(got, c.want), "%q -> %q", c.node, got)
		if c.want != "opcua-"+c.node {
			require.Len(t, got, len(c.want)+8, "%q -> %q: a hash suffix", c.node, got)
		}
		require.Equal(t, got, opcua.EntryID(c.node), "deterministic")
		prev, dup := seen[got]
		require.False(t, dup, "%q and %q collide", prev, c.node)
		seen[got] = c.node
	}
	// IDs that normalise alike stay apart.
	for _, pair := range [][2]string{{"7f3a.9b21", "7f3a-9b21-"}, {"PLC", "plc."}, {long, long + "b"}} {
		require.NotEqual(t, opcua.EntryID(pair[0]), opcua.EntryID(pair[1]), pair)
	}
}

// fixture is a tenant whose saved workspace has two legacy opcua-server nodes, one with a
// Node-RED style ID, and an unrelated node with credentials.
type fixture struct {
	env               *apitest.Env
	tok               string
	certPath, keyPath string
	badCert           string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	// Tenants other than the default read files only inside LOOPZE_FILE_ROOTS.
	env := apitest.New(t, apitest.Options{FileRoots: os.TempDir()})
	f := &fixture{env: env, tok: env.Token(t, "acme", "editor")}
	ca := materialtest.NewCA(t, materialtest.Options{})
	c := ca.Issue(t, materialtest.Options{CommonName: "plc-client"})
	dir := t.TempDir()
	f.certPath = apitest.WriteFile(t, dir, "opc.crt", c.ChainPEM())
	f.keyPath = apitest.WriteFile(t, dir, "opc.key", c.KeyPEM())
	f.badCert = apitest.WriteFile(t, dir, "broken.crt", []byte("not a certificate"))
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: f.tok, Body: `{"flows":[
		{"id":"plant","nodes":[
			{"id":"7f3a.9b21","type":"opcua-server","endpoint":"opc.tcp://plc-a:4840","clientCertFile":"` + f.certPath + `","clientKeyFile":"` + f.keyPath + `"},
			{"id":"plc-b","type":"opcua-server","endpoint":"opc.tcp://plc-b:4840","clientCertFile":"` + f.certPath + `","clientKeyFile":"` + f.keyPath + `"},
			{"id":"mqtt-1","type":"mqtt-broker","credentials":{"password":"keep-me"}}]}]}`})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	return f
}

func (f *fixture) migrator(hook func(tenant, step, nodeID string) error) *opcua.Migrator {
	return &opcua.Migrator{Pool: f.env.Pool, Catalog: f.env.Catalog, Workspace: f.env.Workspace, Logger: f.env.Logger, Hook: hook}
}

// requireMigrated checks the converged state: both nodes use certRef to file entries over
// the old paths, the legacy properties are gone, everything else is kept, and the
// references are recorded.
func (f *fixture) requireMigrated(t *testing.T) {
	t.Helper()
	idA := opcua.EntryID("7f3a.9b21")
	require.Regexp(t, `^opcua-7f3a-9b21-[0-9a-f]{8}$`, idA)
	saved := f.workspace(t)
	for nodeID, entryID := range map[string]string{"7f3a.9b21": idA, "plc-b": "opcua-plc-b"} {
		_, n := saved.Find("plant", nodeID)
		require.NotNil(t, n)
		ref, ok, err := n.Prop("certRef")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, entryID, ref)
		_, hasCert, _ := n.Prop("clientCertFile")
		_, hasKey, _ := n.Prop("clientKeyFile")
		require.False(t, hasCert || hasKey)
		require.Contains(t, string(n.Extra["endpoint"]), "opc.tcp://")

		e, err := f.env.Catalog.Get(context.Background(), "acme", entryID)
		require.NoError(t, err)
		require.Equal(t, "client-pair", string(e.Type))
		require.Equal(t, "file", e.Source)
		require.Equal(t, f.certPath, e.CertPath)
		require.Equal(t, f.keyPath, e.KeyPath)
		require.Equal(t, 1, e.RefCount)
	}
	_, mqtt := saved.Find("plant", "mqtt-1")
	require.True(t, mqtt.Credentials["password"].Keep, "credentials survive the migration")
	res := f.env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows/plant/nodes/7f3a.9b21/tls", Token: f.tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"origin":"ref"`)
	require.Contains(t, string(res.Body), `"ref":"`+idA+`"`)
	require.NotContains(t, string(res.Body), `"error"`)
}

func (f *fixture) version(t *testing.T) int64 {
	t.Helper()
	saved, err := f.env.Workspace.Document(context.Background(), "acme")
	require.NoError(t, err)
	return saved.Version
}

// workspace is the saved workspace as the migration reads it.
func (f *fixture) workspace(t *testing.T) *refs.Workspace {
	t.Helper()
	saved, err := f.env.Workspace.Document(context.Background(), "acme")
	require.NoError(t, err)
	ws, err := saved.Workspace()
	require.NoError(t, err)
	return ws
}

func TestMigrationIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var steps []string
	res, err := f.migrator(func(tenant, step, node string) error {
		steps = append(steps, tenant+":"+step+":"+node)
		return nil
	}).Run(context.Background())
	require.NoError(t, err)
	require.Equal(t, opcua.Result{Migrated: 2}, res)
	require.Equal(t, []string{"acme:entry:7f3a.9b21", "acme:entry:plc-b", "acme:deploy:", "acme:done:"}, steps)
	f.requireMigrated(t)
	v := f.version(t)

	res, err = f.migrator(nil).Run(context.Background())
	require.NoError(t, err)
	require.Equal(t, opcua.Result{}, res)
	require.Equal(t, v, f.version(t), "a second run changes nothing")
	f.requireMigrated(t)

	// The deprecation WARN fired for the initial deploy only.
	require.Equal(t, 2, strings.Count(f.env.Logs.String(), "deprecated clientCertFile"))
	res2 := f.env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: f.tok,
		Body: f.env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/flows", Token: f.tok}).Body})
	require.Equal(t, http.StatusOK, res2.Status)
	require.Equal(t, 2, strings.Count(f.env.Logs.String(), "deprecated clientCertFile"))
	require.NotContains(t, f.env.Logs.String(), "keep-me")
}

// TestInterruptedMigrationConverges stops the run at each step in turn, then runs it
// again: every interruption converges on the state of an uninterrupted run.
func TestInterruptedMigrationConverges(t *testing.T) {
	t.Parallel()
	errCrash := errors.New("simulated crash")
	for stop := range 4 {
		t.Run(fmt.Sprintf("stop-at-step-%d", stop), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			calls := 0
			_, err := f.migrator(func(string, string, string) error {
				calls++
				if calls == stop+1 {
					return errCrash
				}
				return nil
			}).Run(context.Background())
			require.ErrorIs(t, err, errCrash)

			res, err := f.migrator(nil).Run(context.Background())
			require.NoError(t, err)
			if stop == 3 {
				require.Equal(t, opcua.Result{}, res, "stopped after the deploy: nothing left to do")
			} else {
				require.Equal(t, opcua.Result{Migrated: 2}, res)
			}
			f.requireMigrated(t)
		})
	}
}

func TestMigrationSkipsWhatItCannotConvert(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// plc-b's entry ID is taken by an unrelated entry; a third node's files do not parse.
	ca := materialtest.NewCA(t, materialtest.Options{})
	res := f.env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: f.tok, Body: map[string]any{
		"id": "opcua-plc-b", "name": "taken", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM())}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	res = f.env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: f.tok, Body: `{"flows":[
		{"id":"plant","nodes":[
			{"id":"7f3a.9b21","type":"opcua-server","clientCertFile":"` + f.certPath + `","clientKeyFile":"` + f.keyPath + `"},
			{"id":"plc-b","type":"opcua-server","clientCertFile":"` + f.certPath + `","clientKeyFile":"` + f.keyPath + `"},
			{"id":"plc-c","type":"opcua-server","clientCertFile":"` + f.badCert + `","clientKeyFile":"` + f.keyPath + `"}]}]}`})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	out, err := f.migrator(nil).Run(context.Background())
	require.NoError(t, err)
	require.Equal(t, opcua.Result{Migrated: 1, Skipped: 2}, out)
	saved := f.workspace(t)
	for _, id := range []string{"plc-b", "plc-c"} {
		_, n := saved.Find("plant", id)
		cf, ok, _ := n.Prop("clientCertFile")
		require.True(t, ok, id)
		require.NotEmpty(t, cf)
		_, hasRef, _ := n.Prop("certRef")
		require.False(t, hasRef, id)
	}
	logs := f.env.Logs.String()
	require.Contains(t, logs, "the entry ID is taken")
	require.Contains(t, logs, "do not make a client pair")
	require.NotContains(t, logs, "not a certificate")
}
