package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/keyrotation"
	"github.com/loopze/certstore/internal/testdb"
)

// TestKeyScheduleRefusedAtStart: a schedule serve would not honour is one line naming
// LOOPZE_KEY_ROTATE_EVERY before anything starts: too short, negative or unparsable, or
// for a master key only the operator can replace (a systemd credential) or that a URI
// pins (id=).
func TestKeyScheduleRefusedAtStart(t *testing.T) {
	t.Parallel()
	ok := filepath.Join(t.TempDir(), "data")
	creds := t.TempDir()
	key, err := envelope.GenerateKey()
	require.NoError(t, err)
	require.NoError(t, envelope.WriteKeyFile(filepath.Join(creds, envelope.KeyFile), key))
	pinned := "pkcs11:token=loopze;object=master;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=246813"
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"shorter than an hour", []string{"LOOPZE_KEY_ROTATE_EVERY=30m"}, "LOOPZE_KEY_ROTATE_EVERY: 30m0s is shorter than the minimum of 1h0m0s"},
		{"negative", []string{"LOOPZE_KEY_ROTATE_EVERY=-2160h"}, "LOOPZE_KEY_ROTATE_EVERY: want a duration"},
		{"days", []string{"LOOPZE_KEY_ROTATE_EVERY=90d"}, "LOOPZE_KEY_ROTATE_EVERY: want a duration"},
		{"systemd credential", []string{"LOOPZE_KEY_ROTATE_EVERY=2160h", "CREDENTIALS_DIRECTORY=" + creds},
			"LOOPZE_KEY_ROTATE_EVERY: the master key cannot be rotated on a schedule: it is the systemd credential"},
		{"pinned PKCS#11 key", []string{"LOOPZE_KEY_ROTATE_EVERY=2160h", "LOOPZE_MASTER_KEY_URI=" + pinned},
			"LOOPZE_KEY_ROTATE_EVERY: the master key cannot be rotated on a schedule: the PKCS#11 URI pins one key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, "serve")
			cmd.Env = append(os.Environ(), append([]string{"LOOPZE_DATA_DIR=" + ok, "LOOPZE_ADDR=" + freeAddr(t)}, c.env...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "%s", stderr.String())
			require.Equal(t, 1, exit.ExitCode(), "%s", stderr.String())
			out := strings.TrimSpace(stderr.String())
			require.Equal(t, 1, strings.Count(out, "\n")+1, "one line, got:\n%s", out)
			require.Contains(t, out, c.want)
			require.NotContains(t, out, "246813", "a PIN must not be echoed")
		})
	}
	require.NoDirExists(t, filepath.Join(ok, "pg"), "refused before the database starts")
}

// TestKeyScheduleInServe: serve with a schedule registers its keyring and anchors the
// schedule at its first start, says so once, and drops its registration when it stops; a
// rotation by hand is recorded, so the schedule counts from it.
func TestKeyScheduleInServe(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	dbURL := testdb.URL(t)
	env := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL=" + dbURL, "LOOPZE_LOG_FORMAT=json", "LOOPZE_KEY_ROTATE_EVERY=2160h"}
	before := time.Now()
	s := start(t, env)
	s.waitReady(t)
	require.Contains(t, s.stderr.String(), `"msg":"the master key rotates on a schedule"`)
	require.Contains(t, s.stderr.String(), `"every":"2160h0m0s","check_every":"1h0m0s"`)
	require.FileExists(t, filepath.Join(dataDir, keyrotation.KeyringIDFile))

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	// The first check runs as serve starts, beside the first requests.
	var anchored time.Time
	var keyID string
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := conn.QueryRow(ctx, `SELECT rotated_at, key_id FROM master_key_schedule`).Scan(&anchored, &keyID)
		if err == nil {
			break
		}
		require.ErrorIs(t, err, pgx.ErrNoRows)
		require.True(t, time.Now().Before(deadline), "the schedule is anchored at start")
		time.Sleep(50 * time.Millisecond)
	}
	require.WithinRange(t, anchored, before.Add(-time.Second), time.Now())
	require.Empty(t, keyID, "no rotation yet")
	var label string
	require.NoError(t, conn.QueryRow(ctx, `SELECT label FROM master_key_holders`).Scan(&label))
	abs, err := filepath.Abs(dataDir)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(label, ":"+abs), label)

	out := runCLI(t, env, "rotate-key")
	require.Contains(t, out, "master key rotated: now ")
	rotatedTo := strings.Fields(strings.TrimPrefix(out, "master key rotated: now "))[0]
	rotatedTo = strings.TrimSuffix(rotatedTo, ";")
	var rotatedAt time.Time
	require.NoError(t, conn.QueryRow(ctx, `SELECT rotated_at, key_id FROM master_key_schedule`).Scan(&rotatedAt, &keyID))
	require.Equal(t, rotatedTo, keyID)
	require.True(t, rotatedAt.After(anchored))

	s.stop(t, syscall.SIGTERM)
	var holders int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM master_key_holders`).Scan(&holders))
	require.Zero(t, holders, "a replica that stops is no longer waited for")
	require.NotContains(t, s.stderr.String(), `"level":"ERROR"`)
}
