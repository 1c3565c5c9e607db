package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/testdb"
)

// TestAuditVerifyDetectsASuperusersRewrite plays the owner of the database against the
// trail: a superuser switches the append-only trigger off, changes the trail, and then
// recomputes every hash from the change on and the tenant's head with the published
// unkeyed algorithm (audit.Canonical and audit.Hash), so the chain in the database is
// consistent again. `audit verify` must still exit 1 naming the tenant and the record: a
// rewritten record's MAC needs the tenant's audit key, which the database never holds, and
// records removed from the end are missing from the checkpoints the server left in its data
// directory and in the tenant's credentials.json.
func TestAuditVerifyDetectsASuperusersRewrite(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	dbURL := testdb.URL(t)
	env := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL=" + dbURL, "LOOPZE_LOG_FORMAT=json"}
	s := start(t, env)
	s.waitReady(t)
	tok := runCLI(t, env, "token", "--tenant", "default", "--role", "editor", "--sub", "ops")
	const records = 5
	for i := 1; i <= records; i++ {
		createCA(t, s.addr, tok, fmt.Sprint("ca-", i))
	}
	// The export job writes the head into the tenant's credentials.json as well.
	require.Eventually(t, func() bool { return fileAuditHead(t, dbURL, dataDir) == records }, 15*time.Second, 50*time.Millisecond)
	s.stop(t, syscall.SIGTERM)

	code, out, all := runCLICode(t, env, "audit", "verify")
	require.Equal(t, 0, code, all)
	require.Contains(t, out, fmt.Sprintf("tenant default: %d record(s) verified: ok", records))

	ctx := context.Background()
	c := superuser(t, dbURL)
	_, err := c.Exec(ctx, `CREATE TABLE saved_log AS SELECT * FROM audit_log;
		CREATE TABLE saved_heads AS SELECT * FROM audit_heads`)
	require.NoError(t, err)
	// Each attack starts from the trail as the server left it.
	restore := func(t *testing.T) {
		_, err := c.Exec(ctx, `DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM saved_log;
			DELETE FROM audit_heads; INSERT INTO audit_heads SELECT * FROM saved_heads`)
		require.NoError(t, err)
		code, _, all := runCLICode(t, env, "audit", "verify")
		require.Equal(t, 0, code, "the untouched trail verifies: %s", all)
	}
	brokenAt := func(t *testing.T, seq int64) string {
		t.Helper()
		code, _, all := runCLICode(t, env, "audit", "verify")
		require.Equal(t, 1, code, "verify must find the change: %s", all)
		require.Contains(t, all, fmt.Sprintf("first broken link: tenant default: audit record %d:", seq))
		return all
	}

	t.Run("rewrite", func(t *testing.T) {
		defer restore(t)
		_, err := c.Exec(ctx, `UPDATE audit_log SET detail = '{"version":7}' WHERE tenant_id = 'default' AND seq = 2`)
		require.NoError(t, err)
		rechain(t, c, "default", 2)
		all := brokenAt(t, 2)
		require.Contains(t, all, "its MAC does not verify")
	})

	t.Run("truncate", func(t *testing.T) {
		defer restore(t)
		for keep := int64(records - 1); keep >= 0; keep-- {
			_, err := c.Exec(ctx, `DELETE FROM audit_log WHERE tenant_id = 'default' AND seq > $1`, keep)
			require.NoError(t, err)
			rechain(t, c, "default", keep+1)
			all := brokenAt(t, records)
			require.Contains(t, all, "removed", "trail cut to %d record(s)", keep)
		}
	})

	t.Run("cut back with only the credentials file's checkpoint", func(t *testing.T) {
		defer restore(t)
		dir := filepath.Join(dataDir, "audit")
		require.NoError(t, os.Rename(dir, dir+".aside"))
		defer func() { require.NoError(t, os.Rename(dir+".aside", dir)) }()
		_, err := c.Exec(ctx, `DELETE FROM audit_log WHERE tenant_id = 'default' AND seq > 2`)
		require.NoError(t, err)
		rechain(t, c, "default", 3)
		all := brokenAt(t, records)
		require.Contains(t, all, "credentials.json")
	})

	t.Run("remove from the middle and renumber", func(t *testing.T) {
		defer restore(t)
		_, err := c.Exec(ctx, `DELETE FROM audit_log WHERE tenant_id = 'default' AND seq = 3`)
		require.NoError(t, err)
		for seq := 4; seq <= records; seq++ {
			_, err := c.Exec(ctx, `UPDATE audit_log SET seq = seq - 1 WHERE tenant_id = 'default' AND seq = $1`, seq)
			require.NoError(t, err)
		}
		rechain(t, c, "default", 3)
		brokenAt(t, 3)
	})

	// The checkpoint the server wrote: the head it chained, owner-only.
	dir := filepath.Join(dataDir, "audit")
	info, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	info, err = os.Stat(filepath.Join(dir, "default.checkpoint"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	b, err := os.ReadFile(filepath.Join(dir, "default.checkpoint"))
	require.NoError(t, err)
	var cp map[string]any
	require.NoError(t, json.Unmarshal(b, &cp))
	require.Equal(t, "default", cp["tenant"])
	require.EqualValues(t, records, cp["seq"])
}

// createCA posts an inline CA bundle as the token's subject.
func createCA(t *testing.T, addr, tok, id string) {
	t.Helper()
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: id})
	body, _ := json.Marshal(map[string]string{"id": id, "name": id, "type": "ca-bundle", "source": "inline",
		"certPem": string(ca.CertPEM())})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/certs", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
}

// superuser connects to the database at dbURL as the server's superuser, with triggers
// (the audit trail's append-only one among them) and foreign keys switched off for the
// session: what the owner of the database can do.
func superuser(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	admin, err := url.Parse(testdb.AdminURL(t))
	require.NoError(t, err)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = admin.User
	ctx := context.Background()
	c, err := pgx.Connect(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(ctx) })
	_, err = c.Exec(ctx, `SET session_replication_role = replica`)
	require.NoError(t, err)
	return c
}

// rechain recomputes the tenant's chain from record from on, and its head, as the published
// unkeyed algorithm says (docs/audit.md): hash(n) = SHA-256(hash(n-1) || seq || canonical
// bytes). Records before from keep their MACs.
func rechain(t *testing.T, c *pgx.Conn, tenant string, from int64) {
	t.Helper()
	ctx := context.Background()
	rows, err := c.Query(ctx, `SELECT tenant_id, seq, at, subject, role, action, target, fingerprint_before,
		fingerprint_after, request_id, client_addr, detail, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq`, tenant)
	require.NoError(t, err)
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*repo.AuditRecord, error) {
		var r repo.AuditRecord
		err := row.Scan(&r.TenantID, &r.Seq, &r.At, &r.Subject, &r.Role, &r.Action, &r.Target,
			&r.FingerprintBefore, &r.FingerprintAfter, &r.RequestID, &r.ClientAddr, &r.Detail, &r.Hash)
		return &r, err
	})
	require.NoError(t, err)
	prev, before := audit.ZeroHash, audit.ZeroHash
	for _, r := range recs {
		if r.Seq < from {
			before, prev = prev, r.Hash
			continue
		}
		h := audit.Hash(prev, r.Seq, audit.Canonical(r))
		_, err := c.Exec(ctx, `UPDATE audit_log SET prev_hash = $3, hash = $4 WHERE tenant_id = $1 AND seq = $2`,
			tenant, r.Seq, prev, h)
		require.NoError(t, err)
		before, prev = prev, h
	}
	if len(recs) == 0 {
		_, err = c.Exec(ctx, `DELETE FROM audit_heads WHERE tenant_id = $1`, tenant)
	} else {
		last := recs[len(recs)-1]
		_, err = c.Exec(ctx, `UPDATE audit_heads SET seq = $2, prev_hash = $3, hash = $4 WHERE tenant_id = $1`,
			tenant, last.Seq, before, prev)
	}
	require.NoError(t, err)
}

// fileAuditHead is the sequence number of the audit head tenant default's credentials.json
// in dataDir carries (0: none, or no file yet), opened with the master key there.
func fileAuditHead(t *testing.T, dbURL, dataDir string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, credfile.FileName))
	if err != nil {
		return 0
	}
	ctx := context.Background()
	pool, err := db.Open(ctx, dbURL, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer pool.Close()
	// The server of this test keeps its master key in dataDir's loopze.key.
	master, err := masterkey.Open("", dataDir, func(string) string { return "" }, nil)
	require.NoError(t, err)
	defer master.Close()
	keys := &tenantkey.Keys{Pool: pool, Master: master}
	doc, _, err := credfile.Open(keys.Opener(), data, "default")
	require.NoError(t, err)
	if doc.AuditHead == nil {
		return 0
	}
	return doc.AuditHead.Seq
}
