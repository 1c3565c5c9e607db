package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/doctor"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/keyrotation"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
)

// versionsPage is the body of GET .../versions.
type versionsPage struct {
	Items []struct {
		Version           int64  `json:"version"`
		Action            string `json:"action"`
		EntryVersion      int64  `json:"entryVersion"`
		RestoredFrom      int64  `json:"restoredFrom"`
		FingerprintSha256 string `json:"fingerprintSha256"`
		ChangedBy         string `json:"changedBy"`
		Name              string `json:"name"`
		Type              string `json:"type"`
	} `json:"items"`
	NextCursor string `json:"nextCursor"`
}

func versions(t *testing.T, env *apitest.Env, tok, id, query string) versionsPage {
	t.Helper()
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/" + id + "/versions" + query, Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.NotContains(t, string(res.Body), "BEGIN")
	var p versionsPage
	res.Decode(t, &p)
	return p
}

func restore(t *testing.T, env *apitest.Env, tok, id string, version int64, headers map[string]string) *apitest.Response {
	t.Helper()
	return env.Do(t, apitest.Request{Method: http.MethodPost, Token: tok, Headers: headers,
		Path: fmt.Sprintf("/api/v1/certs/%s/versions/%d/restore", id, version)})
}

// opensslFingerprint is what `openssl x509 -noout -fingerprint -sha256` prints for the PEM.
func opensslFingerprint(t *testing.T, pem []byte) string {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	path := apitest.WriteFile(t, t.TempDir(), "cert.pem", pem)
	out, err := exec.Command(openssl, "x509", "-in", filepath.Clean(path), "-noout", "-fingerprint", "-sha256").Output()
	require.NoError(t, err)
	_, fp, ok := strings.Cut(strings.TrimSpace(string(out)), "=")
	require.True(t, ok, "%s", out)
	return fp
}

// adminConn connects to the test's database as the server's superuser, which bypasses
// row-level security and may disable triggers: the tampering an attacker with the
// database's superuser login could do.
func adminConn(t *testing.T, env *apitest.Env) *pgx.Conn {
	t.Helper()
	admin, err := url.Parse(testdb.AdminURL(t))
	require.NoError(t, err)
	u, err := url.Parse(env.DBURL)
	require.NoError(t, err)
	u.User = admin.User
	c, err := pgx.Connect(context.Background(), u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func TestRestoreBringsBackTheOldCertificate(t *testing.T) {
	t.Parallel()
	te := newTLSEnv(t)
	env, tok := te.env, te.tok
	v1, v2 := te.ca.Issue(t, materialtest.Options{CommonName: "edge-v1"}), te.ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	post(t, env, tok, inlinePair("edge-client", v1))
	te.deployClient(t, obj{"clientCertRef": "edge-client"})
	require.Equal(t, fingerprint(v1), te.connect(t).presented(t))

	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/edge-client", Token: tok,
		Body: obj{"certPem": string(v2.ChainPEM()), "keyPem": string(v2.KeyPEM()), "notes": "renewed"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, fingerprint(v2), te.connect(t).presented(t))

	page := versions(t, env, tok, "edge-client", "")
	require.Len(t, page.Items, 2)
	require.Equal(t, int64(2), page.Items[0].Version)
	require.Equal(t, "update", page.Items[0].Action)
	require.Equal(t, fingerprint(v2), page.Items[0].FingerprintSha256)
	require.Equal(t, "create", page.Items[1].Action)
	require.Equal(t, fingerprint(v1), page.Items[1].FingerprintSha256)
	require.Equal(t, "test-editor", page.Items[1].ChangedBy)

	// A stale If-Match is refused, and changes nothing.
	res = restore(t, env, tok, "edge-client", 1, map[string]string{"If-Match": `"1"`})
	require.Equal(t, http.StatusPreconditionFailed, res.Status, "%s", res.Body)

	res = restore(t, env, tok, "edge-client", 1, map[string]string{"If-Match": `"2"`})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	got := res.JSON(t)
	require.Equal(t, opensslFingerprint(t, v1.CertPEM()), got["fingerprintSha256"])
	require.Equal(t, `"3"`, res.Header.Get("ETag"))
	require.Equal(t, "", got["notes"], "the fields come back too")
	requireNoSecrets(t, env, res.Body, v1, v2)

	// The references are untouched and the next connection init presents v1 again.
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/edge-client", Token: tok})
	require.EqualValues(t, 1, res.JSON(t)["referenceCount"])
	require.Equal(t, fingerprint(v1), te.connect(t).presented(t))
	require.Equal(t, fingerprint(v1), te.reported(t))

	page = versions(t, env, tok, "edge-client", "")
	require.Equal(t, "restore", page.Items[0].Action)
	require.Equal(t, int64(1), page.Items[0].RestoredFrom)
	require.Equal(t, int64(3), page.Items[0].EntryVersion)

	// One version, by number.
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/edge-client/versions/2", Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, fingerprint(v2), res.JSON(t)["fingerprintSha256"])
	require.Equal(t, "renewed", res.JSON(t)["notes"])
	requireNoSecrets(t, env, res.Body, v1, v2)
}

func TestRestoreRules(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	pair := ca.Issue(t, materialtest.Options{CommonName: "pair"})
	post(t, env, tok, inlinePair("edge", pair))
	post(t, env, tok, inlineCA("root", ca))

	// A deleted entry's history stays, and restoring its last version recreates it.
	res := env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/edge", Token: tok})
	require.Equal(t, http.StatusNoContent, res.Status, "%s", res.Body)
	page := versions(t, env, tok, "edge", "")
	require.Len(t, page.Items, 2)
	require.Equal(t, "delete", page.Items[0].Action)
	res = restore(t, env, tok, "edge", 2, map[string]string{"If-Match": `"1"`})
	require.Equal(t, http.StatusPreconditionFailed, res.Status, "a deleted entry has no version to match: %s", res.Body)
	res = restore(t, env, tok, "edge", 2, nil)
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Equal(t, fingerprint(pair), res.JSON(t)["fingerprintSha256"])
	// The recreated entry's version continues past the deleted one's.
	require.Equal(t, `"2"`, res.Header.Get("ETag"))
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/edge", Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	// The type must not change while referenced: a PUT made root a client pair before
	// the deploy; restoring that version is refused as a PUT would be.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok,
		Body: obj{"type": "client-pair", "certPem": string(pair.ChainPEM()), "keyPem": string(pair.KeyPEM())}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res = restore(t, env, tok, "root", 1, nil)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, "ca-bundle", res.JSON(t)["type"])
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("n1", "tcp-out", obj{"tls": obj{"caBundleRef": "root"}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	res = restore(t, env, tok, "root", 2, nil)
	require.Equal(t, http.StatusConflict, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"nodeId":"n1"`)

	// Viewers read history but cannot restore.
	viewer := env.Token(t, "default", "viewer")
	versions(t, env, viewer, "root", "")
	res = restore(t, env, viewer, "root", 1, nil)
	require.Equal(t, http.StatusForbidden, res.Status, "%s", res.Body)
}

func TestHistoryBadInputIsA4xx(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "admin")
	other := env.Token(t, "globex", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlineCA("root", ca))
	for i := range 4 {
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok,
			Body: obj{"notes": fmt.Sprint("note ", i)}})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	}

	// Paging newest first, with the cursor.
	page := versions(t, env, tok, "root", "?limit=2")
	require.Equal(t, []int64{5, 4}, []int64{page.Items[0].Version, page.Items[1].Version})
	require.NotEmpty(t, page.NextCursor)
	page = versions(t, env, tok, "root", "?limit=2&cursor="+page.NextCursor)
	require.Equal(t, []int64{3, 2}, []int64{page.Items[0].Version, page.Items[1].Version})
	page = versions(t, env, tok, "root", "?limit=2&cursor="+page.NextCursor)
	require.Len(t, page.Items, 1)
	require.Empty(t, page.NextCursor)

	for _, c := range []struct {
		method, path, token string
		status              int
	}{
		{http.MethodGet, "/api/v1/certs/root/versions/9", tok, http.StatusNotFound},
		{http.MethodPost, "/api/v1/certs/root/versions/9/restore", tok, http.StatusNotFound},
		{http.MethodGet, "/api/v1/certs/nothing/versions", tok, http.StatusNotFound},
		{http.MethodGet, "/api/v1/certs/root/versions/abc", tok, http.StatusUnprocessableEntity},
		{http.MethodGet, "/api/v1/certs/root/versions/0", tok, http.StatusUnprocessableEntity},
		{http.MethodGet, "/api/v1/certs/root/versions/-1", tok, http.StatusUnprocessableEntity},
		{http.MethodGet, "/api/v1/certs/root/versions/99999999999999999999", tok, http.StatusUnprocessableEntity},
		{http.MethodGet, "/api/v1/certs/root/versions?cursor=!!!", tok, http.StatusBadRequest},
		{http.MethodGet, "/api/v1/certs/root/versions?cursor=bm9wZQ", tok, http.StatusBadRequest},
		{http.MethodGet, "/api/v1/certs/root/versions?cursor=MA", tok, http.StatusBadRequest},
		{http.MethodGet, "/api/v1/certs/root/versions?limit=0", tok, http.StatusUnprocessableEntity},
		// Another tenant's entry does not exist for this one.
		{http.MethodGet, "/api/v1/certs/root/versions", other, http.StatusNotFound},
		{http.MethodGet, "/api/v1/certs/root/versions/1", other, http.StatusNotFound},
		{http.MethodPost, "/api/v1/certs/root/versions/1/restore", other, http.StatusNotFound},
		{http.MethodGet, "/api/v1/certs/root/versions", "", http.StatusUnauthorized},
		{http.MethodPost, "/api/v1/certs/root/versions/1/restore", tok, http.StatusBadRequest}, // bad If-Match below
	} {
		req := apitest.Request{Method: c.method, Path: c.path, Token: c.token}
		if c.status == http.StatusBadRequest && c.method == http.MethodPost {
			req.Headers = map[string]string{"If-Match": "yesterday"}
		}
		res := env.Do(t, req)
		require.Equal(t, c.status, res.Status, "%s %s: %s", c.method, c.path, res.Body)
		require.Contains(t, res.Header.Get("Content-Type"), "json")
	}
	// globex made nothing: its history of root is empty, and acme's is whole.
	require.Len(t, versions(t, env, tok, "root", "").Items, 5)
}

func TestVersionCiphertextOpensOnlyInItsRow(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	a, b := ca.Issue(t, materialtest.Options{CommonName: "a"}), ca.Issue(t, materialtest.Options{CommonName: "b"})
	post(t, env, tok, inlinePair("alpha", a))
	post(t, env, tok, inlinePair("beta", b))
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/alpha", Token: tok, Body: obj{"notes": "second"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	ctx := context.Background()
	sql := adminConn(t, env)
	exec := func(q string) {
		t.Helper()
		_, err := sql.Exec(ctx, q)
		require.NoError(t, err)
	}
	// alpha's version 1 ciphertext over its version 2, and over beta's version 1.
	exec(`UPDATE entry_versions d SET cert_sealed = s.cert_sealed, key_sealed = s.key_sealed
		FROM entry_versions s WHERE s.entry_id = 'alpha' AND s.version = 1
		AND ((d.entry_id = 'alpha' AND d.version = 2) OR (d.entry_id = 'beta' AND d.version = 1))`)
	for _, c := range []struct {
		id string
		n  int64
	}{{"alpha", 2}, {"beta", 1}} {
		v := readVersion(t, env, c.id, c.n)
		_, _, err := env.Catalog.OpenVersion(context.Background(), v)
		require.ErrorIs(t, err, envelope.ErrDecrypt, "%s@%d", c.id, c.n)
		res := restore(t, env, tok, c.id, c.n, nil)
		require.Equal(t, http.StatusInternalServerError, res.Status, "%s", res.Body)
		requireNoSecrets(t, env, res.Body, a, b)
	}
	// The untouched version still opens, and restores.
	v := readVersion(t, env, "alpha", 1)
	cert, _, err := env.Catalog.OpenVersion(context.Background(), v)
	require.NoError(t, err)
	require.Equal(t, a.ChainPEM(), []byte(cert))

	// A version's ciphertext copied into its entry's row does not open there either.
	exec(`UPDATE entries e SET cert_sealed = v.cert_sealed FROM entry_versions v
		WHERE e.id = 'beta' AND v.entry_id = 'beta' AND v.version = 1`)
	e, err := repo.GetEntry(ctx, env.Pool, "default", "beta")
	if err == nil {
		_, _, err = env.Catalog.Open(context.Background(), e)
	}
	require.Error(t, err)

	// doctor names each version that does not decrypt.
	rep := (&doctor.Doctor{Pool: env.Pool, DataDir: env.DataDir, Keys: env.Keys, ExpiringWithin: -1, MasterKey: tenantkeytest.Source(t, env.DataDir)}).Run(ctx)
	var failed []string
	for _, c := range rep.Checks {
		if c.Check == "rows" && c.Status == doctor.Fail {
			failed = append(failed, c.Subject)
		}
	}
	require.Contains(t, failed, "default/alpha@2")
	require.Contains(t, failed, "default/beta@1")
	require.NotContains(t, failed, "default/alpha@1")
}

// readVersion reads one version with its sealed material, as the restore does.
func readVersion(t *testing.T, env *apitest.Env, id string, n int64) *repo.Version {
	t.Helper()
	var v *repo.Version
	err := inTenant(env, "default", func(tx pgx.Tx) error {
		var err error
		v, err = repo.GetVersion(context.Background(), tx, "default", id, n)
		return err
	})
	require.NoError(t, err)
	return v
}

func TestHistorySurvivesRotateKey(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	v1, v2 := ca.Issue(t, materialtest.Options{CommonName: "v1"}), ca.Issue(t, materialtest.Options{CommonName: "v2"})
	post(t, env, tok, inlinePair("edge", v1))
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/edge", Token: tok,
		Body: obj{"certPem": string(v2.ChainPEM()), "keyPem": string(v2.KeyPEM())}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	ctx := context.Background()
	ring, err := env.Keys.Ring(ctx, "default")
	require.NoError(t, err)
	oldKey := ring.CurrentKeyID()

	// The master key rotates by rewrapping the tenant's key: no row moves.
	rot := &keyrotation.Rotator{Pool: env.Pool, DataDir: env.DataDir, Keys: env.Keys, Settle: time.Millisecond, BatchSize: 2}
	actx := audit.WithActor(ctx, audit.Actor{Subject: "loopze-certs rotate-key", Role: "operator"})
	rep, err := rot.Rotate(actx)
	require.NoError(t, err)
	require.Equal(t, 1, rep.TenantKeys)
	require.Zero(t, rep.Rewrapped)
	ids, err := keyrotation.KeyIDsInUse(ctx, env.Pool)
	require.NoError(t, err)
	require.Equal(t, []string{oldKey}, ids, "rows stay under the tenant's key")

	// The tenant's key rotates by moving its rows.
	rep, err = rot.RotateTenant(actx, "default")
	require.NoError(t, err)
	require.EqualValues(t, 3, rep.Rewrapped, "the entry and its two versions")
	ids, err = keyrotation.KeyIDsInUse(ctx, env.Pool)
	require.NoError(t, err)
	require.Equal(t, []string{rep.NewKeyID}, ids)
	require.NotEqual(t, oldKey, rep.NewKeyID)

	// A server started afresh, knowing only the master key, opens the old version and
	// restores it.
	fresh := tenantkeytest.New(t, env.Pool, env.DataDir)
	ring, err = fresh.Ring(ctx, "default")
	require.NoError(t, err)
	require.Equal(t, rep.NewKeyID, ring.CurrentKeyID())
	require.NoError(t, env.Keys.Reload())
	res = restore(t, env, tok, "edge", 1, nil)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, fingerprint(v1), res.JSON(t)["fingerprintSha256"])

	drep := (&doctor.Doctor{Pool: env.Pool, DataDir: env.DataDir, Keys: fresh, ExpiringWithin: -1, MasterKey: tenantkeytest.Source(t, env.DataDir)}).Run(ctx)
	for _, c := range drep.Checks {
		if c.Check == "rows" {
			require.Equal(t, doctor.OK, c.Status, "%+v", c)
			require.Contains(t, c.Message, "3 versions")
		}
	}
	// The rotation is in the audit trail, in the same chain.
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit?action=key.rotate", Token: env.Token(t, "default", "admin")})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), `"subject":"loopze-certs rotate-key"`)
	_, err = (&audit.Service{Pool: env.Pool, Keys: env.Keys.Audit()}).Verify(ctx)
	require.NoError(t, err)
}

func TestPruningKeepsExactlyN(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "default", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlineCA("root", ca))
	post(t, env, tok, inlineCA("gone", ca))
	post(t, env, tok, inlineCA("short", ca))
	for i := range 6 {
		res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok, Body: obj{"notes": fmt.Sprint(i)}})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	}
	res := env.Do(t, apitest.Request{Method: http.MethodDelete, Path: "/api/v1/certs/gone", Token: tok})
	require.Equal(t, http.StatusNoContent, res.Status, "%s", res.Body)

	ctx := context.Background()
	// Within the retention period a deleted entry's history stays (pruned to N like any).
	n, err := env.Catalog.PruneHistory(ctx, 3, 90*24*time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, 4, n, "root's 7 versions down to 3")
	page := versions(t, env, tok, "root", "")
	require.Len(t, page.Items, 3)
	require.Equal(t, []int64{7, 6, 5}, []int64{page.Items[0].Version, page.Items[1].Version, page.Items[2].Version})
	require.Len(t, versions(t, env, tok, "gone", "").Items, 2)
	require.Len(t, versions(t, env, tok, "short", "").Items, 1)

	// Past it, the deleted entry's history goes entirely; live entries keep N.
	n, err = env.Catalog.PruneHistory(ctx, 3, -time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/gone/versions", Token: tok})
	require.Equal(t, http.StatusNotFound, res.Status, "%s", res.Body)
	require.Len(t, versions(t, env, tok, "root", "").Items, 3)

	// The next change continues the numbering.
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok, Body: obj{"notes": "after"}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, int64(8), versions(t, env, tok, "root", "").Items[0].Version)
}

func inTenant(env *apitest.Env, tenant string, fn func(pgx.Tx) error) error {
	return db.InTenant(context.Background(), env.Pool, tenant, fn)
}
