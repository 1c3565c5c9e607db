package testdb_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// connect opens a connection closed at the end of the test.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.WithoutCancel(ctx)) })
	return conn
}

// isolationProof writes a marker table and row of its own, then checks it sees exactly
// its own: the sibling test doing the same in parallel must be invisible.
func isolationProof(t *testing.T, mine, theirs string) {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, testdb.URL(t))
	_, err := conn.Exec(ctx, "CREATE TABLE "+mine+" (v text)")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "INSERT INTO "+mine+" VALUES ($1)", mine)
	require.NoError(t, err)

	var rows int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM "+mine).Scan(&rows))
	require.Equal(t, 1, rows)
	var theirsExists bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", theirs).Scan(&theirsExists))
	require.False(t, theirsExists, "a sibling test's table is visible: databases are shared")
}

func TestIsolationA(t *testing.T) {
	t.Parallel()
	isolationProof(t, "marker_a", "marker_b")
}

func TestIsolationB(t *testing.T) {
	t.Parallel()
	isolationProof(t, "marker_b", "marker_a")
}

func TestDatabaseIsMigrated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t, testdb.URL(t))
	var applied int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM goose_db_version WHERE version_id > 0 AND is_applied").Scan(&applied))
	require.Positive(t, applied, "the template carries the goose migrations")
}

func TestTemplateCloneIsFast(t *testing.T) {
	t.Parallel()
	testdb.URL(t) // the first call may build the template; the second only clones it
	start := time.Now()
	url := testdb.URL(t)
	t.Logf("template clone took %v (source %s)", time.Since(start), testdb.Kind())
	var one int
	require.NoError(t, connect(t, url).QueryRow(context.Background(), "SELECT 1").Scan(&one))
	require.Equal(t, 1, one)
}

func TestAdminURLIsSuperuser(t *testing.T) {
	t.Parallel()
	if testdb.Kind() == testdb.KindEnv {
		t.Skip("the role of LOOPZE_TEST_DATABASE_URL is the operator's choice")
	}
	var super string
	require.NoError(t, connect(t, testdb.AdminURL(t)).QueryRow(context.Background(), "SHOW is_superuser").Scan(&super))
	require.Equal(t, "on", super)
}

func TestDump(t *testing.T) {
	t.Parallel()
	url := testdb.URL(t)
	_, err := connect(t, url).Exec(context.Background(), "CREATE TABLE dumped_marker (id int)")
	require.NoError(t, err)
	dump := string(testdb.Dump(t, url))
	require.Contains(t, dump, "CREATE TABLE public.dumped_marker")
	require.Contains(t, dump, "goose_db_version")
}

func TestKind(t *testing.T) {
	t.Parallel()
	testdb.URL(t) // skips when there is no source at all
	require.Contains(t, []string{testdb.KindEnv, testdb.KindTestcontainers, testdb.KindLocal}, testdb.Kind())
	t.Logf("database source: %s", testdb.Kind())
	if want := os.Getenv(testdb.EnvSource); want != "" && os.Getenv(testdb.EnvURL) == "" {
		require.Equal(t, want, testdb.Kind(), "the forced source must be the one in use")
	}
}
