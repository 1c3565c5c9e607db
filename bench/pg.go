package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/pgembed"
)

// pgSettings are the test harness's settings (internal/testdb): a throwaway cluster trades
// durability for speed. They are printed with every run, since they flatter writes.
var pgSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "200",
}

// statementsSettings add pg_stat_statements, which only observes: the profile of a missed
// target then shows the SQL the server spent its database time on, which a Go CPU profile
// cannot see.
var statementsSettings = map[string]string{
	"shared_preload_libraries":  "pg_stat_statements",
	"pg_stat_statements.track":  "all",
	"pg_stat_statements.max":    "1000",
	"track_activity_query_size": "4096",
}

// appDatabase is the server's database; pgbenchDatabase holds pgbench's own tables.
const (
	appDatabase     = "loopze"
	pgbenchDatabase = "pgbench"
)

// cluster is the run's PostgreSQL and the tools around it.
type cluster struct {
	*pgembed.Cluster
	binDir       string
	pgbenchReady bool // the pgbench -S database is initialised
}

// startCluster starts a throwaway cluster under dir (which the postgres user can reach).
func startCluster(ctx context.Context, dir string, logger *slog.Logger) (*cluster, error) {
	binDir, err := pgembed.FindBinDir()
	if err != nil {
		return nil, err
	}
	c, err := pgembed.Start(ctx, pgembed.Options{
		DataDir:       filepath.Join(dir, "pg"),
		BinDir:        binDir,
		Database:      appDatabase,
		Settings:      settingsWithStatements(),
		DieWithParent: true,
		Logger:        logger,
		StartTimeout:  2 * time.Minute,
	})
	if err != nil {
		return nil, err
	}
	return &cluster{Cluster: c, binDir: binDir}, nil
}

func settingsWithStatements() map[string]string {
	m := maps.Clone(pgSettings)
	maps.Copy(m, statementsSettings)
	return m
}

// facts reads the server version and the settings that shape the figures.
func (c *cluster) facts(ctx context.Context) (map[string]string, error) {
	conn, err := pgx.Connect(ctx, c.URL(appDatabase))
	if err != nil {
		return nil, fmt.Errorf("connect for facts: %w", err)
	}
	defer conn.Close(ctx)
	out := map[string]string{}
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	out["server_version"] = v
	for _, name := range []string{"fsync", "synchronous_commit", "full_page_writes", "shared_buffers",
		"max_connections", "work_mem", "jit", "wal_level"} {
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return nil, fmt.Errorf("read setting %s: %w", name, err)
		}
		out[name] = v
	}
	out["connection"] = "unix socket " + c.SocketDir()
	return out, nil
}

// exec runs one SQL statement as the superuser in database db.
func (c *cluster) exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL(db))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("exec on %s: %w", db, err)
	}
	return nil
}

// pgbench runs the pgbench binary against db over the socket and returns its output.
func (c *cluster) pgbench(ctx context.Context, db string, args ...string) (string, error) {
	full := append([]string{"-h", c.SocketDir(), "-U", pgembed.Superuser}, args...)
	full = append(full, db)
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "pgbench"), full...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pgbench %s: %w: %s", strings.Join(args, " "), err, pgbenchError(string(out)))
	}
	return string(out), nil
}

var (
	tpsLine     = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	latencyLine = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// parsePgbench reads throughput and average latency from pgbench's summary.
func parsePgbench(out string) (tps float64, avg time.Duration, err error) {
	m := tpsLine.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("pgbench printed no tps line: %s", lastLines(out, 5))
	}
	tps, err = strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench tps %q: %w", m[1], err)
	}
	if m := latencyLine.FindStringSubmatch(out); m != nil {
		ms, _ := strconv.ParseFloat(m[1], 64)
		avg = time.Duration(ms * float64(time.Millisecond))
	}
	return tps, avg, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// pgbenchSelect is `pgbench -S -M prepared` at the bench's concurrency on a small scale.
func (c *cluster) pgbenchSelect(ctx context.Context, conc int, dur time.Duration) (Baseline, error) {
	b := Baseline{Name: "pgbench -S"}
	if !c.pgbenchReady { // initialised once for the runs
		if err := c.exec(ctx, appDatabase, "CREATE DATABASE "+pgbenchDatabase); err != nil {
			return b, err
		}
		if _, err := c.pgbench(ctx, pgbenchDatabase, "-i", "-q", "-s", "10"); err != nil {
			return b, err
		}
		c.pgbenchReady = true
	}
	args := []string{"-S", "-M", "prepared", "-c", strconv.Itoa(conc), "-j", "2", "-T", strconv.Itoa(secs(dur))}
	b.Command = "pgbench " + strings.Join(args, " ") + " (scale 10)"
	out, err := c.pgbench(ctx, pgbenchDatabase, args...)
	if err != nil {
		return b, err
	}
	tps, _, err := parsePgbench(out)
	b.Throughput = tps
	return b, err
}

// sealedCertSize and sealedKeySize shape the insert baseline's row like an inline entry's:
// about 2 KiB of incompressible bytea, as sealed material is.
const (
	sealedCertSize = 1600
	sealedKeySize  = 448
)

// pgbenchInsert is pgbench running a custom script that inserts one row shaped like an
// entry (the entries table's columns, checks and primary key; about 2 KiB of bytea) per
// transaction, at the bench's concurrency.
func (c *cluster) pgbenchInsert(ctx context.Context, dir string, conc int, dur time.Duration) (Baseline, error) {
	b := Baseline{Name: "pgbench insert"}
	setup := `CREATE TABLE entry_shape (LIKE entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
		CREATE SEQUENCE entry_shape_seq;`
	if err := c.exec(ctx, appDatabase, setup); err != nil {
		return b, err
	}
	defer func() {
		_ = c.exec(context.WithoutCancel(ctx), appDatabase, "DROP TABLE entry_shape; DROP SEQUENCE entry_shape_seq")
	}()
	// pgbench reads ":name" as a variable even inside literals, hence chr(58) for the
	// fingerprint's colons.
	script := fmt.Sprintf(`INSERT INTO entry_shape (tenant_id, id, name, type, source, notes, cert_sealed, key_sealed, key_id,
 fingerprint_sha256, subject, issuer, serial_number, not_before, not_after, dns_names, cert_count, key_algorithm, has_private_key)
 VALUES ('bench', 'i' || nextval('entry_shape_seq'), 'Insert baseline', 'client-pair', 'inline', '', '\x%s'::bytea, '\x%s'::bytea,
 '0123456789abcdef', repeat('AB' || chr(58), 31) || 'AB', 'CN=bench', 'CN=bench', '01', now(), now() + interval '1 day', '{}', 1, 'ECDSA-P256', true);
`, randHex(sealedCertSize), randHex(sealedKeySize))
	path := filepath.Join(dir, "insert.sql")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		return b, fmt.Errorf("write insert script: %w", err)
	}
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(conc), "-j", "2", "-T", strconv.Itoa(secs(dur)), "-f", path}
	b.Command = "pgbench " + strings.Join(args[:len(args)-1], " ") + " insert.sql (one entry-shaped row, ~2 KiB bytea)"
	out, err := c.pgbench(ctx, appDatabase, args...)
	if err != nil {
		return b, err
	}
	tps, _, err := parsePgbench(out)
	b.Throughput = tps
	return b, err
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

func secs(d time.Duration) int { return max(1, int(d.Round(time.Second)/time.Second)) }

// selectEntrySQL reads one entry row by primary key with the columns the server reads.
const selectEntrySQL = `SELECT tenant_id, id, name, type, source, notes, coalesce(cert_path, ''), coalesce(key_path, ''),
	cert_sealed, key_sealed, coalesce(key_id, ''), fingerprint_sha256, subject, issuer, serial_number,
	not_before, not_after, dns_names, cert_count, key_algorithm, has_private_key, version, created_at, updated_at
	FROM entries WHERE tenant_id = $1 AND id = $2`

// pgxSelect is raw pgx, in process, selecting random entry rows of tenant by primary key
// at the bench's concurrency: the floor under every read path of the server.
func (c *cluster) pgxSelect(ctx context.Context, tenant string, ids []string, conc int, warm, dur time.Duration) (Baseline, *LoadResult, error) {
	b := Baseline{Name: "raw pgx by PK", Command: fmt.Sprintf("pgx pool (%d conns), prepared SELECT of one entry row by (tenant_id, id)", conc)}
	cfg, err := pgxpool.ParseConfig(c.URL(appDatabase))
	if err != nil {
		return b, nil, err
	}
	cfg.MaxConns = int32(conc)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return b, nil, fmt.Errorf("open pgx pool: %w", err)
	}
	defer pool.Close()
	res := runLoad(ctx, conc, warm, dur, func(ctx context.Context, _ int, rnd *rand.Rand) error {
		var (
			s                                     [11]string
			cert, key                             []byte
			notBefore, notAfter, created, updated time.Time
			dns                                   []string
			count                                 int
			algo                                  string
			hasKey                                bool
			version                               int64
		)
		return pool.QueryRow(ctx, selectEntrySQL, tenant, ids[rnd.IntN(len(ids))]).Scan(&s[0], &s[1], &s[2], &s[3], &s[4], &s[5],
			&s[6], &s[7], &cert, &key, &s[8], &s[9], &s[10], &algo, &algo, &notBefore, &notAfter, &dns, &count, &algo,
			&hasKey, &version, &created, &updated)
	})
	if res.FirstErr != nil && res.Ops == 0 {
		return b, res, fmt.Errorf("raw pgx select: %w", res.FirstErr)
	}
	b.Throughput, b.P50, b.P99 = res.Throughput(), Millis(res.Hist.Quantile(0.5)), Millis(res.Hist.Quantile(0.99))
	return b, res, nil
}

// pgbenchError picks the lines of pgbench's output that say what went wrong.
func pgbenchError(out string) string {
	var keep []string
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, "error") || strings.Contains(line, "ERROR") || strings.Contains(line, "aborted") {
			keep = append(keep, strings.TrimSpace(line))
		}
	}
	if len(keep) == 0 {
		return lastLines(out, 5)
	}
	return strings.Join(keep[:min(len(keep), 4)], " | ")
}

// resetStatements clears pg_stat_statements before a profiled run.
func (c *cluster) resetStatements(ctx context.Context) error {
	return c.exec(ctx, appDatabase, "SELECT pg_stat_statements_reset()")
}

// topStatements lists the n statements of the app database that took the most execution
// time since the last reset, one line each: total, calls, mean, rows per call, the query.
func (c *cluster) topStatements(ctx context.Context, n int) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL(appDatabase))
	if err != nil {
		return "", fmt.Errorf("connect for statements: %w", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT total_exec_time, calls, mean_exec_time, rows::float8 / greatest(calls, 1), regexp_replace(query, '\s+', ' ', 'g')
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = $1 AND query NOT LIKE '%pg_stat_statements%'
		ORDER BY total_exec_time DESC LIMIT $2`, appDatabase, n)
	if err != nil {
		return "", fmt.Errorf("read pg_stat_statements: %w", err)
	}
	defer rows.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%10s %8s %9s %8s  %s\n", "total ms", "calls", "mean ms", "rows", "query")
	for rows.Next() {
		var (
			total, mean, perCall float64
			calls                int64
			query                string
		)
		if err := rows.Scan(&total, &calls, &mean, &perCall, &query); err != nil {
			return "", fmt.Errorf("scan pg_stat_statements: %w", err)
		}
		if len(query) > 160 {
			query = query[:157] + "..."
		}
		fmt.Fprintf(&b, "%10.0f %8d %9.3f %8.1f  %s\n", total, calls, mean, perCall, query)
	}
	return b.String(), rows.Err()
}
