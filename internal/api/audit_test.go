package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
)

// auditPage is the body of GET /api/v1/audit.
type auditPage struct {
	Items      []audit.Link `json:"items"`
	NextCursor string       `json:"nextCursor"`
}

func auditList(t *testing.T, env *apitest.Env, tok, query string) auditPage {
	t.Helper()
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit" + query, Token: tok})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	var p auditPage
	res.Decode(t, &p)
	return p
}

func actions(p auditPage) []string {
	out := make([]string, len(p.Items))
	for i, e := range p.Items {
		out[i] = e.Action + " " + e.Target
	}
	return out
}

func TestAuditRecordsEveryWrite(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok, admin := env.Token(t, "acme", "editor"), env.Token(t, "acme", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{})
	v1, v2 := ca.Issue(t, materialtest.Options{CommonName: "v1"}), ca.Issue(t, materialtest.Options{CommonName: "v2"})
	const password = "s3cret-Pa55word"
	start := time.Now().Add(-time.Second)

	do := func(method, path string, body any, want int) {
		t.Helper()
		res := env.Do(t, apitest.Request{Method: method, Path: path, Token: tok, Body: body,
			Headers: map[string]string{"X-Request-Id": "req-" + method}})
		require.Equal(t, want, res.Status, "%s %s: %s", method, path, res.Body)
	}
	do(http.MethodPost, "/api/v1/certs", inlinePair("edge", v1), http.StatusCreated)
	do(http.MethodPut, "/api/v1/certs/edge", obj{"certPem": string(v2.ChainPEM()), "keyPem": string(v2.KeyPEM())}, http.StatusOK)
	do(http.MethodPut, "/api/v1/flows", workspaceOf(flow("f1",
		node("mqtt-1", "mqtt-broker", obj{"credentials": obj{"user": "plc", "password": password}}),
		node("out-1", "tcp-out", obj{"tls": obj{"clientCertRef": "edge"}}))), http.StatusOK)
	do(http.MethodDelete, "/api/v1/certs/edge", nil, http.StatusConflict)
	do(http.MethodPut, "/api/v1/flows", workspaceOf(flow("f1", node("out-1", "tcp-out", obj{"tls": obj{"caBundleRef": "nothing"}}))), http.StatusUnprocessableEntity)
	do(http.MethodPut, "/api/v1/flows", workspaceOf(flow("f1", node("mqtt-1", "mqtt-broker", obj{"credentials": obj{"password": ""}}))), http.StatusOK)
	do(http.MethodPost, "/api/v1/certs/edge/versions/1/restore", nil, http.StatusOK)
	do(http.MethodDelete, "/api/v1/certs/edge", nil, http.StatusNoContent)

	page := auditList(t, env, admin, "")
	require.Equal(t, []string{
		"entry.delete entry:edge",
		"entry.restore entry:edge",
		"node.credentials node:mqtt-1",
		"workspace.deploy workspace",
		"workspace.deploy.refused workspace",
		"entry.delete.refused entry:edge",
		"node.credentials node:mqtt-1",
		"workspace.deploy workspace",
		"entry.update entry:edge",
		"entry.create entry:edge",
	}, actions(page))
	for i, e := range page.Items {
		require.Equal(t, int64(len(page.Items)-i), e.Seq)
		require.Equal(t, "acme", e.Tenant)
		require.Equal(t, "test-editor", e.Subject)
		require.Equal(t, "editor", e.Role)
		require.True(t, strings.HasPrefix(e.RequestID, "req-"), e.RequestID)
		require.Equal(t, "127.0.0.1", e.ClientAddr)
		require.WithinRange(t, e.Time, start, time.Now().Add(time.Second))
	}
	byAction := func(a string) audit.Link {
		for _, e := range page.Items {
			if e.Action == a {
				return e
			}
		}
		t.Fatalf("no %s", a)
		return audit.Link{}
	}
	upd := byAction("entry.update")
	require.Equal(t, fingerprint(v1), upd.FingerprintBefore)
	require.Equal(t, fingerprint(v2), upd.FingerprintAfter)
	rest := byAction("entry.restore")
	require.Equal(t, fingerprint(v2), rest.FingerprintBefore)
	require.Equal(t, fingerprint(v1), rest.FingerprintAfter)
	require.JSONEq(t, `{"version":3,"restoredFrom":1}`, string(rest.Detail))
	require.Equal(t, fingerprint(v1), byAction("entry.delete").FingerprintBefore)
	require.JSONEq(t, `{"references":1}`, string(byAction("entry.delete.refused").Detail))
	require.JSONEq(t, `{"problems":1}`, string(byAction("workspace.deploy.refused").Detail))
	require.JSONEq(t, `{"version":1,"references":1,"referencesAdded":1,"referencesRemoved":0}`, string(page.Items[9-2].Detail))
	require.JSONEq(t, `{"version":2,"references":0,"referencesAdded":0,"referencesRemoved":1}`, string(page.Items[3].Detail))
	require.JSONEq(t, `{"set":["credentials.password","credentials.user"],"removed":[]}`, string(page.Items[6].Detail))
	require.JSONEq(t, `{"set":[],"removed":["credentials.password"]}`, string(page.Items[2].Detail))

	// Never PEM, keys or credential values.
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit", Token: admin})
	requireNoSecrets(t, env, res.Body, v1, v2)
	require.NotContains(t, string(res.Body), password)

	// Filters and paging.
	require.Equal(t, []string{"entry.delete.refused entry:edge"}, actions(auditList(t, env, admin, "?action=entry.delete.refused")))
	require.Len(t, auditList(t, env, admin, "?target=entry:edge").Items, 5)
	require.Len(t, auditList(t, env, admin, "?subject=test-editor").Items, 10)
	require.Empty(t, auditList(t, env, admin, "?subject=someone-else").Items)
	since := url.QueryEscape(start.UTC().Format(time.RFC3339Nano))
	require.Len(t, auditList(t, env, admin, "?since="+since).Items, 10)
	require.Empty(t, auditList(t, env, admin, "?until="+since).Items)
	p1 := auditList(t, env, admin, "?limit=4")
	require.Len(t, p1.Items, 4)
	p2 := auditList(t, env, admin, "?limit=4&cursor="+p1.NextCursor)
	require.Equal(t, int64(6), p2.Items[0].Seq)
	p3 := auditList(t, env, admin, "?limit=4&cursor="+p2.NextCursor)
	require.Len(t, p3.Items, 2)
	require.Empty(t, p3.NextCursor)

	// The chain verifies.
	results, err := (&audit.Service{Pool: env.Pool, Keys: env.Keys.Audit()}).Verify(context.Background())
	require.NoError(t, err)
	require.Equal(t, []audit.TenantResult{{Tenant: "acme", Records: 10, Keyed: 10}}, results, "every record is chained under the tenant's audit key")
}

func TestAuditRouteRulesAndIsolation(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, env.Token(t, "acme", "editor"), inlineCA("root", ca))
	admin := env.Token(t, "acme", "admin")
	require.Len(t, auditList(t, env, admin, "").Items, 1)
	// Another tenant's admin sees nothing of acme's.
	require.Empty(t, auditList(t, env, env.Token(t, "globex", "admin"), "").Items)
	require.Empty(t, auditList(t, env, env.Token(t, "globex", "admin"), "?target=entry:root").Items)

	for _, c := range []struct {
		query, token string
		status       int
		location     string
	}{
		{"", env.Token(t, "acme", "editor"), http.StatusForbidden, ""},
		{"", env.Token(t, "acme", "viewer"), http.StatusForbidden, ""},
		{"", "", http.StatusUnauthorized, ""},
		{"?since=yesterday", admin, http.StatusBadRequest, "query.since"},
		{"?until=2026-13-01T00:00:00Z", admin, http.StatusBadRequest, "query.until"},
		{"?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", admin, http.StatusBadRequest, "query.until"},
		{"?action=entry.explode", admin, http.StatusBadRequest, "query.action"},
		{"?cursor=!!!", admin, http.StatusBadRequest, "query.cursor"},
		{"?cursor=" + url.QueryEscape("eyJhIjoxfQ"), admin, http.StatusBadRequest, "query.cursor"},
		{"?cursor=LTU", admin, http.StatusBadRequest, "query.cursor"},
		{"?target=%00", admin, http.StatusBadRequest, "query"},
		{"?subject=%ff", admin, http.StatusBadRequest, "query"},
		{"?limit=0", admin, http.StatusUnprocessableEntity, ""},
		{"?limit=5000", admin, http.StatusUnprocessableEntity, ""},
	} {
		res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit" + c.query, Token: c.token})
		require.Equal(t, c.status, res.Status, "%s: %s", c.query, res.Body)
		if c.location != "" {
			require.Contains(t, string(res.Body), `"location":"`+c.location+`"`, c.query)
		}
	}
}

func TestAuditRowsAreAppendOnly(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	post(t, env, env.Token(t, "acme", "editor"), inlineCA("root", materialtest.NewCA(t, materialtest.Options{})))
	ctx := context.Background()
	// The create's record is chained into audit_log (as the server's chainer does soon after
	// the write, and every read of the trail does first).
	n, err := audit.Chain(ctx, env.Pool, nil, "acme")
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// The server's own connections (here the table owner's login) are refused by the trigger.
	for _, q := range []string{
		`UPDATE audit_log SET subject = 'mallory' WHERE tenant_id = 'acme'`,
		`DELETE FROM audit_log WHERE tenant_id = 'acme'`,
		`TRUNCATE audit_log`,
	} {
		err := inTenant(env, "acme", func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, q)
			return err
		})
		require.Error(t, err, q)
		require.Contains(t, err.Error(), "append-only", q)
	}

	// internal/db's TestAppRoleMayOnlyAppendAudit shows the application role lacks the
	// grants besides.
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit", Token: env.Token(t, "acme", "admin")})
	require.Contains(t, string(res.Body), `"subject":"test-editor"`)
	require.NotContains(t, string(res.Body), "mallory")
}

func TestAuditVerifyNamesTheAlteredRow(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	for _, id := range []string{"a", "b", "c", "d"} {
		post(t, env, tok, inlineCA(id, ca))
	}
	post(t, env, env.Token(t, "globex", "editor"), inlineCA("x", ca))
	post(t, env, env.Token(t, "globex", "editor"), inlineCA("x2", ca))
	svc := &audit.Service{Pool: env.Pool, Keys: env.Keys.Audit()}
	ctx := context.Background()
	_, err := svc.Verify(ctx)
	require.NoError(t, err)

	tamper := func(q string) {
		t.Helper()
		c := adminConn(t, env)
		// Only a superuser can switch the append-only trigger off.
		_, err := c.Exec(ctx, `SET session_replication_role = replica`)
		require.NoError(t, err)
		_, err = c.Exec(ctx, q)
		require.NoError(t, err)
	}
	var broken *audit.BrokenLinkError
	tamper(`UPDATE audit_log SET subject = 'someone-else' WHERE tenant_id = 'acme' AND seq = 3`)
	results, err := svc.Verify(ctx)
	require.ErrorAs(t, err, &broken)
	require.Equal(t, "acme", broken.Tenant)
	require.EqualValues(t, 3, broken.Seq)
	require.Contains(t, err.Error(), "tenant acme: audit record 3")
	require.Nil(t, results[1].Broken, "globex's chain is intact: %+v", results)

	// A record removed from the middle, or from the end, is found too.
	tamper(`DELETE FROM audit_log WHERE tenant_id = 'globex' AND seq = 1`)
	_, err = svc.VerifyTenant(ctx, "globex")
	require.ErrorAs(t, err, &broken)
	require.EqualValues(t, 2, broken.Seq)
	require.Contains(t, err.Error(), "missing")

	post(t, env, env.Token(t, "initech", "editor"), inlineCA("y", ca))
	post(t, env, env.Token(t, "initech", "editor"), inlineCA("z", ca))
	_, err = audit.Chain(ctx, env.Pool, env.Keys.Audit(), "initech")
	require.NoError(t, err)
	tamper(`DELETE FROM audit_log WHERE tenant_id = 'initech' AND seq = 2`)
	_, err = svc.VerifyTenant(ctx, "initech")
	require.ErrorAs(t, err, &broken)
	require.EqualValues(t, 2, broken.Seq)
	require.True(t, errors.Is(err, audit.ErrBroken))
}

func TestConcurrentWritesKeepOneChain(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlineCA("shared", ca))
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := inlineCA(fmt.Sprint("e", i), ca)
			b, _ := json.Marshal(body)
			env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: b})
			env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/shared", Token: tok, Body: obj{"notes": fmt.Sprint(i)}})
			env.Do(t, apitest.Request{Method: http.MethodDelete, Path: fmt.Sprintf("/api/v1/certs/e%d", i), Token: tok})
		}()
	}
	wg.Wait()
	results, err := (&audit.Service{Pool: env.Pool, Keys: env.Keys.Audit()}).Verify(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 1+12*3, results[0].Records)
	require.Len(t, versions(t, env, tok, "shared", "?limit=100").Items, 13)
}

// testAuditKeys are fixed audit keys per tenant and version, versions 1 to current.
type testAuditKeys struct {
	mu      sync.Mutex
	current int
}

func (k *testAuditKeys) key(tenant string, v int) []byte {
	sum := sha256.Sum256(fmt.Appendf(nil, "api test audit key %s/%d", tenant, v))
	return sum[:]
}

func (k *testAuditKeys) version() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return max(k.current, 1)
}

func (k *testAuditKeys) Current(_ context.Context, tenant string) (int, []byte, error) {
	v := k.version()
	return v, k.key(tenant, v), nil
}

func (k *testAuditKeys) Version(_ context.Context, tenant string, v int) ([]byte, error) {
	if v < 1 || v > k.version() {
		return nil, audit.ErrUnknownKeyVersion
	}
	return k.key(tenant, v), nil
}

// TestAuditListingShowsTheKeyedChain: a server with audit keys lists each record's key
// version, and its hash is the HMAC the documentation describes, which whoever holds the
// key (and nobody else) can recompute from the listing; a rewrite by the database's owner
// is then named by verify at the record rewritten.
func TestAuditListingShowsTheKeyedChain(t *testing.T) {
	t.Parallel()
	keys := &testAuditKeys{}
	env := apitest.New(t, apitest.Options{AuditKeys: keys})
	tok, admin := env.Token(t, "acme", "editor"), env.Token(t, "acme", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlineCA("a", ca))
	post(t, env, tok, inlineCA("b", ca))
	// Records are chained under the key current when they are chained: here, by the read.
	require.Len(t, auditList(t, env, admin, "").Items, 2)
	keys.mu.Lock()
	keys.current = 2
	keys.mu.Unlock()
	post(t, env, tok, inlineCA("c", ca))

	page := auditList(t, env, admin, "")
	require.Len(t, page.Items, 3)
	for _, e := range page.Items {
		want := 1
		if e.Seq == 3 {
			want = 2
		}
		require.Equal(t, want, e.KeyVersion, "record %d", e.Seq)
		prev, err := hex.DecodeString(e.PrevHash)
		require.NoError(t, err)
		r := &repo.AuditRecord{TenantID: e.Tenant, At: e.Time, Subject: e.Subject, Role: e.Role, Action: e.Action,
			Target: e.Target, FingerprintBefore: e.FingerprintBefore, FingerprintAfter: e.FingerprintAfter,
			RequestID: e.RequestID, ClientAddr: e.ClientAddr, Detail: string(e.Detail)}
		require.Equal(t, hex.EncodeToString(audit.MAC(keys.key("acme", want), prev, e.Seq, audit.Canonical(r))), e.Hash)
	}
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit", Token: admin})
	require.Contains(t, string(res.Body), `"keyVersion":2`)

	svc := &audit.Service{Pool: env.Pool, Keys: keys}
	ctx := context.Background()
	head, err := audit.Head(ctx, env.Pool, "acme")
	require.NoError(t, err)
	_, err = svc.VerifyTenant(ctx, "acme", head)
	require.NoError(t, err)

	c := adminConn(t, env)
	_, err = c.Exec(ctx, `SET session_replication_role = replica`)
	require.NoError(t, err)
	_, err = c.Exec(ctx, `UPDATE audit_log SET subject = 'someone-else' WHERE tenant_id = 'acme' AND seq = 2`)
	require.NoError(t, err)
	_, err = svc.VerifyTenant(ctx, "acme", head)
	var broken *audit.BrokenLinkError
	require.ErrorAs(t, err, &broken)
	require.EqualValues(t, 2, broken.Seq)
	require.Contains(t, err.Error(), "tenant acme: audit record 2: its MAC does not verify under audit key version 1")
}
