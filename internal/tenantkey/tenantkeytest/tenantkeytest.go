// Package tenantkeytest gives tests the tenant keys a server has: a master keyring and the
// tenant keys under it, over a test's database. The master key lives in a loopze.key file
// in the directory given, or where LOOPZE_TEST_MASTER_KEY_URI says (a pkcs11: URI, so the
// whole suite can run with the master key in a token, as CI does with SoftHSM2).
package tenantkeytest

import (
	"log/slog"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/tenantkey"
)

// EnvMasterKeyURI names the master key tests use instead of a file in their directory.
const EnvMasterKeyURI = "LOOPZE_TEST_MASTER_KEY_URI"

// New opens the master keyring for dir (see the package comment) and returns the tenant
// keys under it over pool. The keyring closes with the test.
func New(t testing.TB, pool *pgxpool.Pool, dir string) *tenantkey.Keys {
	t.Helper()
	master, err := masterkey.Open(os.Getenv(EnvMasterKeyURI), dir, os.Getenv, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = master.Close() })
	return &tenantkey.Keys{Pool: pool, Master: master, Logger: slog.New(slog.DiscardHandler)}
}
