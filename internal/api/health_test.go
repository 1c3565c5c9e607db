package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/testdb"
)

// TestReadyzWithoutWritableDatabase: while the database takes no writes (a standby before
// its promotion, a primary demoted, default_transaction_read_only), /readyz answers 503 so
// the load balancer takes the replica out, a write answers 503 rather than 500, and both
// recover by themselves once the database is writable again.
func TestReadyzWithoutWritableDatabase(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	ctx := context.Background()
	readyz := func() *apitest.Response { return env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/readyz"}) }
	require.Equal(t, http.StatusOK, readyz().Status)

	cfg, err := pgx.ParseConfig(env.DBURL)
	require.NoError(t, err)
	admin, err := pgx.Connect(ctx, testdb.AdminURL(t))
	require.NoError(t, err)
	defer admin.Close(ctx)
	name := pgx.Identifier{cfg.Database}.Sanitize()
	setReadOnly := func(on bool) {
		stmt := `ALTER DATABASE ` + name + ` RESET default_transaction_read_only`
		if on {
			stmt = `ALTER DATABASE ` + name + ` SET default_transaction_read_only = on`
		}
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err)
		env.Pool.Reset() // new connections, which take the database's setting
	}

	setReadOnly(true)
	res := readyz()
	require.Equal(t, http.StatusServiceUnavailable, res.Status)
	require.Contains(t, string(res.Body), "no writable database")
	cert, _ := materialtest.Pair(t, materialtest.Options{CommonName: "read-only"})
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: env.Token(t, "acme", "editor"),
		Body: map[string]any{"id": "ro", "name": "read-only", "type": "ca-bundle", "source": "inline", "certPem": string(cert)}})
	require.Equal(t, http.StatusServiceUnavailable, res.Status, "%s", res.Body)

	setReadOnly(false)
	require.Equal(t, http.StatusOK, readyz().Status)
}
