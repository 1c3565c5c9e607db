package audit_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// memKeys is a Keys with fixed keys per tenant and version, versions 1 to the tenant's
// current one (1 unless set).
type memKeys struct {
	mu      sync.Mutex
	current map[string]int
}

func (k *memKeys) key(tenant string, v int) []byte {
	sum := sha256.Sum256(fmt.Appendf(nil, "test audit key of %s, version %d", tenant, v))
	return sum[:]
}

func (k *memKeys) currentOf(tenant string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v := k.current[tenant]; v > 0 {
		return v
	}
	return 1
}

// rotate makes v the current version of tenant.
func (k *memKeys) rotate(tenant string, v int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.current == nil {
		k.current = map[string]int{}
	}
	k.current[tenant] = v
}

func (k *memKeys) Current(_ context.Context, tenant string) (int, []byte, error) {
	v := k.currentOf(tenant)
	return v, k.key(tenant, v), nil
}

func (k *memKeys) Version(_ context.Context, tenant string, v int) ([]byte, error) {
	if v < 1 || v > k.currentOf(tenant) {
		return nil, fmt.Errorf("tenant %s, version %d: %w", tenant, v, audit.ErrUnknownKeyVersion)
	}
	return k.key(tenant, v), nil
}

// badKeys gives a key the chain must refuse.
type badKeys struct {
	version int
	key     []byte
}

func (b badKeys) Current(context.Context, string) (int, []byte, error) { return b.version, b.key, nil }
func (b badKeys) Version(context.Context, string, int) ([]byte, error) { return b.key, nil }

type bundle struct {
	ctx   context.Context
	pool  *pgxpool.Pool
	dbURL string
	keys  *memKeys
	svc   *audit.Service
}

func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	pool, err := db.Open(ctx, dbURL, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	keys := &memKeys{}
	return &bundle{ctx: ctx, pool: pool, dbURL: dbURL, keys: keys, svc: &audit.Service{Pool: pool, Keys: keys}}
}

// record stores n records of tenant and chains them under keys.
func (b *bundle) record(t *testing.T, keys audit.Keys, tenant string, n int) {
	t.Helper()
	ctx := audit.WithActor(b.ctx, audit.Actor{Subject: "ops", Role: "editor"})
	for i := range n {
		require.NoError(t, audit.RecordAlone(ctx, b.pool, audit.Event{Tenant: tenant, Action: audit.EntryCreate,
			Target: audit.EntryTarget(fmt.Sprint("e", i)), Detail: map[string]any{"version": 1}}))
	}
	moved, err := audit.Chain(b.ctx, b.pool, keys, tenant)
	require.NoError(t, err)
	require.Equal(t, n, moved)
}

// brokenAt verifies tenant against checkpoints and requires the first broken link at seq.
func (b *bundle) brokenAt(t *testing.T, tenant string, seq int64, reason string, cps ...audit.Checkpoint) {
	t.Helper()
	_, err := b.svc.VerifyTenant(b.ctx, tenant, cps...)
	var broken *audit.BrokenLinkError
	require.ErrorAs(t, err, &broken)
	require.Equal(t, tenant, broken.Tenant)
	require.Equal(t, seq, broken.Seq, "%v", err)
	require.Contains(t, broken.Reason, reason)
	require.ErrorIs(t, err, audit.ErrBroken)
}

// owner is the database's superuser with triggers off for the session: the append-only
// trigger does not stop it.
func (b *bundle) owner(t *testing.T) *pgx.Conn {
	t.Helper()
	admin, err := url.Parse(testdb.AdminURL(t))
	require.NoError(t, err)
	u, err := url.Parse(b.dbURL)
	require.NoError(t, err)
	u.User = admin.User
	c, err := pgx.Connect(b.ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	_, err = c.Exec(b.ctx, `SET session_replication_role = replica`)
	require.NoError(t, err)
	return c
}

func (b *bundle) exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	_, err := c.Exec(b.ctx, sql, args...)
	require.NoError(t, err)
}

// trail reads tenant's records as its owner does.
func (b *bundle) trail(t *testing.T, c *pgx.Conn, tenant string) []*repo.AuditRecord {
	t.Helper()
	rows, err := c.Query(b.ctx, `SELECT tenant_id, seq, at, subject, role, action, target, fingerprint_before,
		fingerprint_after, request_id, client_addr, detail, prev_hash, hash, COALESCE(key_version, 0)
		FROM audit_log WHERE tenant_id = $1 ORDER BY seq`, tenant)
	require.NoError(t, err)
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*repo.AuditRecord, error) {
		var r repo.AuditRecord
		err := row.Scan(&r.TenantID, &r.Seq, &r.At, &r.Subject, &r.Role, &r.Action, &r.Target, &r.FingerprintBefore,
			&r.FingerprintAfter, &r.RequestID, &r.ClientAddr, &r.Detail, &r.PrevHash, &r.Hash, &r.KeyVersion)
		return &r, err
	})
	require.NoError(t, err)
	return recs
}

// rechain recomputes, as the owner, the hashes of tenant's records from seq from on (and
// the head) with the published unkeyed algorithm, marking them unkeyed; a keyed record
// before from keeps its MAC, and the first record after it its own prev_hash link is
// set to the recomputed hash, as a forger would.
func (b *bundle) rechain(t *testing.T, c *pgx.Conn, tenant string, from int64) {
	t.Helper()
	recs := b.trail(t, c, tenant)
	prev, before := audit.ZeroHash, audit.ZeroHash
	for _, r := range recs {
		if r.Seq < from {
			before, prev = prev, r.Hash
			continue
		}
		h := audit.Hash(prev, r.Seq, audit.Canonical(r))
		b.exec(t, c, `UPDATE audit_log SET prev_hash = $3, hash = $4, key_version = NULL WHERE tenant_id = $1 AND seq = $2`,
			tenant, r.Seq, prev, h)
		before, prev = prev, h
	}
	b.exec(t, c, `UPDATE audit_heads SET seq = $2, prev_hash = $3, hash = $4 WHERE tenant_id = $1`,
		tenant, recs[len(recs)-1].Seq, before, prev)
}

func TestKeyedChainVerifies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.record(t, b.keys, "acme", 3)
	b.keys.rotate("acme", 2)
	b.record(t, b.keys, "acme", 2)
	b.record(t, b.keys, "globex", 2)

	res, err := b.svc.Verify(b.ctx)
	require.NoError(t, err)
	require.Equal(t, []audit.TenantResult{{Tenant: "acme", Records: 5, Keyed: 5}, {Tenant: "globex", Records: 2, Keyed: 2}}, res)

	c := b.owner(t)
	recs := b.trail(t, c, "acme")
	for i, r := range recs {
		want := 1
		if i >= 3 {
			want = 2
		}
		require.Equal(t, want, r.KeyVersion, "record %d", r.Seq)
		require.Equal(t, audit.MAC(b.keys.key("acme", want), r.PrevHash, r.Seq, audit.Canonical(r)), r.Hash)
		require.NotEqual(t, audit.Hash(r.PrevHash, r.Seq, audit.Canonical(r)), r.Hash)
	}
	// Without the keys, nothing keyed is taken on trust.
	_, err = (&audit.Service{Pool: b.pool}).VerifyTenant(b.ctx, "acme")
	require.ErrorIs(t, err, audit.ErrNoKeys)
	require.NotErrorIs(t, err, audit.ErrBroken)
}

// TestOwnerCannotRewriteAKeyedRecord is the finding: the database's owner rewrites a
// record and recomputes the published chain after it, and the head.
func TestOwnerCannotRewriteAKeyedRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.record(t, b.keys, "acme", 5)
	c := b.owner(t)

	// Recomputed as unkeyed records after a keyed one: refused at the rewritten record.
	b.exec(t, c, `UPDATE audit_log SET detail = '{"version":9}' WHERE tenant_id = 'acme' AND seq = 3`)
	b.rechain(t, c, "acme", 3)
	b.brokenAt(t, "acme", 3, "chained without a key after record 2")

	// Recomputed keeping the key version: the MAC does not verify without the key.
	b.exec(t, c, `UPDATE audit_log SET key_version = 1 WHERE tenant_id = 'acme' AND seq >= 3`)
	b.brokenAt(t, "acme", 3, "its MAC does not verify under audit key version 1")

	// A key version the tenant never had.
	b.exec(t, c, `UPDATE audit_log SET key_version = 7 WHERE tenant_id = 'acme' AND seq = 3`)
	b.brokenAt(t, "acme", 3, "audit key version 7, which the tenant never had")
}

// TestFirstKeyedRecordAnchorsTheUnkeyedOnes: records of an earlier release (chained by
// plain SHA-256) cannot be rewritten once a keyed record follows them.
func TestFirstKeyedRecordAnchorsTheUnkeyedOnes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.record(t, nil, "acme", 3)
	b.record(t, b.keys, "acme", 2)
	res, err := b.svc.VerifyTenant(b.ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, audit.TenantResult{Tenant: "acme", Records: 5, Keyed: 2}, res)

	c := b.owner(t)
	b.exec(t, c, `UPDATE audit_log SET subject = 'mallory' WHERE tenant_id = 'acme' AND seq = 1`)
	recs := b.trail(t, c, "acme")
	prev := audit.ZeroHash
	for _, r := range recs[:3] {
		h := audit.Hash(prev, r.Seq, audit.Canonical(r))
		b.exec(t, c, `UPDATE audit_log SET prev_hash = $2, hash = $3 WHERE tenant_id = 'acme' AND seq = $1`, r.Seq, prev, h)
		prev = h
	}
	b.exec(t, c, `UPDATE audit_log SET prev_hash = $1 WHERE tenant_id = 'acme' AND seq = 4`, prev)
	b.brokenAt(t, "acme", 4, "its MAC does not verify")

	// Once keyed, a server without its keys does not go on unkeyed: the records wait.
	b.record(t, b.keys, "globex", 1)
	require.NoError(t, audit.RecordAlone(b.ctx, b.pool, audit.Event{Tenant: "globex", Action: audit.KeyRotate, Target: "tenant"}))
	_, err = audit.Chain(b.ctx, b.pool, nil, "globex")
	require.ErrorIs(t, err, audit.ErrNoKeys)
	moved, err := audit.Chain(b.ctx, b.pool, b.keys, "globex")
	require.NoError(t, err)
	require.Equal(t, 1, moved)

	// A key the chain cannot use chains nothing.
	require.NoError(t, audit.RecordAlone(b.ctx, b.pool, audit.Event{Tenant: "globex", Action: audit.KeyRotate, Target: "tenant"}))
	for _, k := range []badKeys{{version: 0, key: make([]byte, 32)}, {version: 1, key: make([]byte, 16)}} {
		_, err = audit.Chain(b.ctx, b.pool, k, "globex")
		require.ErrorIs(t, err, audit.ErrBadKey)
	}
	res, err = b.svc.VerifyTenant(b.ctx, "globex")
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Keyed)
}

func TestCheckpointsFindWhatTheChainCannot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.record(t, nil, "acme", 4)
	dir := t.TempDir() + "/audit"
	ch := &audit.Chainer{Pool: b.pool, CheckpointDir: dir}
	cp, err := ch.WriteCheckpoint(b.ctx, "acme")
	require.NoError(t, err)
	head, err := audit.Head(b.ctx, b.pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 4, cp.Seq)
	require.Equal(t, head.MAC, cp.MAC)
	require.Equal(t, 0, cp.KeyVersion)
	cps, err := audit.ReadCheckpoints(dir)
	require.NoError(t, err)
	require.Len(t, cps, 1)
	require.Equal(t, cp, cps[0])

	res, err := b.svc.VerifyTenant(b.ctx, "acme", cps...)
	require.NoError(t, err)
	require.EqualValues(t, 4, res.Checkpoint)

	c := b.owner(t)
	b.exec(t, c, `CREATE TABLE saved AS SELECT * FROM audit_log`)
	restore := func() {
		b.exec(t, c, `DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM saved`)
		b.rechain(t, c, "acme", 5) // the head back at record 4
	}

	// An unkeyed trail rewritten and recomputed is consistent on its own; the
	// checkpoint is not.
	b.exec(t, c, `UPDATE audit_log SET detail = '{}' WHERE tenant_id = 'acme' AND seq = 2`)
	b.rechain(t, c, "acme", 2)
	_, err = b.svc.VerifyTenant(b.ctx, "acme")
	require.NoError(t, err, "without the checkpoint the rewrite goes unseen")
	b.brokenAt(t, "acme", 4, "differs from checkpoint "+dir+"/acme.checkpoint", cps...)

	// The chainer does not move the checkpoint onto the rewritten trail, even once the
	// trail grows past it: the file stays as evidence.
	b.record(t, nil, "acme", 1)
	_, err = ch.WriteCheckpoint(b.ctx, "acme")
	var broken *audit.BrokenLinkError
	require.ErrorAs(t, err, &broken)
	require.EqualValues(t, 4, broken.Seq)
	after, err := audit.ReadCheckpoints(dir)
	require.NoError(t, err)
	require.Equal(t, cps, after)

	// Cut back to any length below the checkpoint, head fixed: the checkpointed record is
	// missing.
	restore()
	for keep := int64(3); keep >= 1; keep-- {
		b.exec(t, c, `DELETE FROM audit_log WHERE tenant_id = 'acme' AND seq > $1`, keep)
		b.rechain(t, c, "acme", keep+1)
		b.brokenAt(t, "acme", 4, fmt.Sprintf("the trail ends at record %d", keep), cps...)
		_, err = ch.WriteCheckpoint(b.ctx, "acme")
		require.ErrorAs(t, err, &broken)
	}
	// The whole trail gone, with its head and its tenant: the checkpoint still names it.
	b.exec(t, c, `DELETE FROM audit_log WHERE tenant_id = 'acme'; DELETE FROM audit_heads WHERE tenant_id = 'acme';
		DELETE FROM tenants WHERE id = 'acme'`)
	results, err := b.svc.Verify(b.ctx, cps...)
	require.ErrorAs(t, err, &broken)
	require.Equal(t, "acme", broken.Tenant)
	require.EqualValues(t, 4, broken.Seq)
	require.Equal(t, "acme", results[0].Tenant)
	after, err = audit.ReadCheckpoints(dir)
	require.NoError(t, err)
	require.Equal(t, cps, after)
}

func TestCheckpointsGivenByACaller(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.record(t, b.keys, "acme", 3)
	b.record(t, b.keys, "globex", 1)
	head, err := audit.Head(b.ctx, b.pool, "acme")
	require.NoError(t, err)
	require.Equal(t, 1, head.KeyVersion)
	other, err := audit.Head(b.ctx, b.pool, "globex")
	require.NoError(t, err)

	// Checkpoints of other tenants are ignored, so one list serves every tenant.
	res, err := b.svc.VerifyTenant(b.ctx, "acme", head, other)
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Checkpoint)

	wrong := head
	wrong.MAC = audit.ZeroHash
	wrong.Source = "the credentials.json header"
	b.brokenAt(t, "acme", 3, "differs from checkpoint the credentials.json header", wrong)
	wrong = head
	wrong.KeyVersion = 2
	b.brokenAt(t, "acme", 3, "chained under audit key version 1, but checkpoint given holds version 2", wrong)
	ahead := head
	ahead.Seq = 9
	b.brokenAt(t, "acme", 9, "the trail ends at record 3", head, ahead)

	// A checkpoint travels as JSON, the MAC in hex.
	raw, err := head.MarshalJSON()
	require.NoError(t, err)
	require.JSONEq(t, fmt.Sprintf(`{"tenant":"acme","seq":3,"mac":"%x","keyVersion":1}`, head.MAC), string(raw))
	var back audit.Checkpoint
	require.NoError(t, back.UnmarshalJSON(raw))
	require.Equal(t, head, back)
	for _, bad := range []string{
		`{"tenant":"../etc","seq":3,"mac":"00","keyVersion":1}`,
		`{"tenant":"acme","seq":0,"mac":"` + fmt.Sprintf("%x", head.MAC) + `","keyVersion":1}`,
		`{"tenant":"acme","seq":3,"mac":"abcd","keyVersion":1}`,
		`{"tenant":"acme","seq":3,"mac":"` + fmt.Sprintf("%x", head.MAC) + `","keyVersion":-1}`,
		`{"tenant":"acme","seq":3,"mac":"` + fmt.Sprintf("%x", head.MAC) + `","keyVersion":1,"extra":1}`,
		`[]`,
	} {
		require.ErrorIs(t, back.UnmarshalJSON([]byte(bad)), audit.ErrBadCheckpoint, bad)
	}
}

func TestReadCheckpointsRefusesWhatItCannotUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	none, err := audit.ReadCheckpoints(dir + "/missing")
	require.NoError(t, err)
	require.Empty(t, none)

	mac := fmt.Sprintf("%x", audit.ZeroHash)
	for name, content := range map[string]string{
		"acme.checkpoint":   `{"tenant":"globex","seq":1,"mac":"` + mac + `","keyVersion":0}`,
		"globex.checkpoint": `not json`,
	} {
		sub := t.TempDir()
		require.NoError(t, writeFile(sub+"/"+name, content))
		_, err := audit.ReadCheckpoints(sub)
		require.ErrorIs(t, err, audit.ErrBadCheckpoint, name)
		require.Contains(t, err.Error(), sub+"/"+name)
	}
	// Lock files and other names are not checkpoints.
	require.NoError(t, writeFile(dir+"/.acme.checkpoint.lock", ""))
	require.NoError(t, writeFile(dir+"/README", "x"))
	require.NoError(t, writeFile(dir+"/acme.checkpoint", `{"tenant":"acme","seq":2,"mac":"`+mac+`","keyVersion":3}`))
	cps, err := audit.ReadCheckpoints(dir)
	require.NoError(t, err)
	require.Equal(t, []audit.Checkpoint{{Tenant: "acme", Seq: 2, MAC: audit.ZeroHash, KeyVersion: 3, Source: dir + "/acme.checkpoint"}}, cps)
}

// TestChainerCheckpointsWhenItStops: the checkpoint of the last writes is on disk once
// Run has returned, whatever the coalescing held back.
func TestChainerCheckpointsWhenItStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.record(t, b.keys, "acme", 1)
	dir := t.TempDir() + "/audit"
	ch := &audit.Chainer{Pool: b.pool, Keys: b.keys, CheckpointDir: dir, CheckpointEvery: 1 << 40}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ch.Run(ctx)
	}()
	for range 3 {
		require.NoError(t, audit.RecordAlone(b.ctx, b.pool, audit.Event{Tenant: "acme", Action: audit.KeyRotate, Target: "tenant"}))
		ch.Kick("acme")
	}
	cancel()
	<-done
	head, err := audit.Head(b.ctx, b.pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 4, head.Seq)
	cps, err := audit.ReadCheckpoints(dir)
	require.NoError(t, err)
	require.Len(t, cps, 1)
	require.Equal(t, head.Seq, cps[0].Seq)
	require.Equal(t, head.MAC, cps[0].MAC)
	require.Equal(t, 1, cps[0].KeyVersion)
	requireMode(t, dir, 0o700)
	requireMode(t, dir+"/acme.checkpoint", 0o600)
	res, err := b.svc.VerifyTenant(b.ctx, "acme", cps...)
	require.NoError(t, err)
	require.Equal(t, audit.TenantResult{Tenant: "acme", Records: 4, Keyed: 4, Checkpoint: 4}, res)
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

func requireMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, mode, info.Mode().Perm(), path)
}
