package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/testdb"
)

// TestAuditVerifyAndExport runs the audit subcommands against a running server's
// database: verify passes, export writes one JSON line per record with no PEM, and once a
// superuser alters a record verify exits 1 naming that record.
func TestAuditVerifyAndExport(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	dbURL := testdb.URL(t)
	env := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL=" + dbURL, "LOOPZE_LOG_FORMAT=json"}
	s := start(t, env)
	s.waitReady(t)
	tok := runCLI(t, env, "token", "--tenant", "default", "--role", "editor", "--sub", "ops")
	for _, id := range []string{"a", "b", "c"} {
		ca := materialtest.NewCA(t, materialtest.Options{CommonName: id})
		body, _ := json.Marshal(map[string]string{"id": id, "name": id, "type": "ca-bundle", "source": "inline",
			"certPem": string(ca.CertPEM())})
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/v1/certs", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode)
	}
	s.stop(t, syscall.SIGTERM)

	code, out, all := runCLICode(t, env, "audit", "verify")
	require.Equal(t, 0, code, all)
	require.Contains(t, out, "tenant default: 3 record(s) verified: ok")

	code, out, all = runCLICode(t, env, "audit", "export", "--tenant", "default")
	require.Equal(t, 0, code, all)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	var first map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.Equal(t, "entry.create", first["action"])
	require.Equal(t, "entry:a", first["target"])
	require.Equal(t, "ops", first["subject"])
	require.NotContains(t, out, "BEGIN")

	// An import and a key rotation are recorded as the operator commands that made them.
	runCLI(t, env, "export")
	runCLI(t, env, "import", "--tenant", "copy", "--from-tenant", "default", "--file", filepath.Join(dataDir, "credentials.json"))
	runCLI(t, env, "rotate-key")
	code, out, all = runCLICode(t, env, "audit", "export", "--tenant", "copy")
	require.Equal(t, 0, code, all)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	// Each imported entry is a create of its own (the one write path every entry takes),
	// then the import as a whole, then the rotation.
	require.Len(t, lines, 5, out)
	for i, id := range []string{"a", "b", "c"} {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(lines[i]), &rec))
		require.Equal(t, "entry.create", rec["action"])
		require.Equal(t, "entry:"+id, rec["target"])
		require.Equal(t, "loopze-certs import", rec["subject"])
		require.Equal(t, true, rec["detail"].(map[string]any)["import"])
	}
	var imp, rot map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[3]), &imp))
	require.NoError(t, json.Unmarshal([]byte(lines[4]), &rot))
	require.Equal(t, "tenant.import", imp["action"])
	require.Equal(t, "loopze-certs import", imp["subject"])
	require.Equal(t, "operator", imp["role"])
	require.EqualValues(t, 3, imp["detail"].(map[string]any)["entries"])
	require.Equal(t, "key.rotate", rot["action"])
	require.Equal(t, "loopze-certs rotate-key", rot["subject"])
	code, out, all = runCLICode(t, env, "audit", "verify")
	require.Equal(t, 0, code, all)
	require.Contains(t, out, "tenant copy: 5 record(s) verified: ok")
	require.Contains(t, out, "tenant default: 4 record(s) verified: ok")

	// A superuser switches the append-only trigger off and rewrites record 2.
	admin, err := url.Parse(testdb.AdminURL(t))
	require.NoError(t, err)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = admin.User
	ctx := context.Background()
	c, err := pgx.Connect(ctx, u.String())
	require.NoError(t, err)
	defer c.Close(ctx)
	_, err = c.Exec(ctx, `SET session_replication_role = replica`)
	require.NoError(t, err)
	_, err = c.Exec(ctx, `UPDATE audit_log SET target = 'entry:z' WHERE tenant_id = 'default' AND seq = 2`)
	require.NoError(t, err)

	code, _, all = runCLICode(t, env, "audit", "verify")
	require.Equal(t, 1, code, all)
	require.Contains(t, all, "first broken link: tenant default: audit record 2:")

	code, _, all = runCLICode(t, env, "audit")
	require.Equal(t, 2, code, all)
	code, _, all = runCLICode(t, env, "audit", "export")
	require.Equal(t, 2, code, all)
}
