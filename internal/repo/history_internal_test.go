package repo

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
)

// versionAt is version n of entry id, a file entry whose text columns change only on
// the versions where the caller says.
func versionAt(tenant, id string, n int64, name, by, fingerprint string) *Version {
	return &Version{TenantID: tenant, EntryID: id, Version: n, Action: VersionUpdate, EntryVersion: n, Name: name,
		Type: material.CABundle, Source: "file", CertPath: "/etc/loopze/" + id + ".pem", ChangedBy: by,
		Meta: material.Metadata{FingerprintSHA256: fingerprint, Subject: "CN=x", Issuer: "CN=x", SerialNumber: "01",
			NotBefore: time.Unix(1e9, 0), NotAfter: time.Unix(2e9+n, 0), CertCount: 1, KeyAlgorithm: "Ed25519"}}
}

// TestListVersionsSummaries: a page holds each version's own values, newest first, also
// where the text columns change from one version to the next and back, and pages on.
func TestListVersionsSummaries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := openPool(t)

	names := []string{"A", "A", "B", "A", "", "", "Zertifikat für München", "A"}
	var want []VersionSummary
	require.NoError(t, db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		if _, err := BumpGeneration(ctx, tx, "acme"); err != nil {
			return err
		}
		for i, name := range names {
			n := int64(i + 1)
			v := versionAt("acme", "root", n, name, fmt.Sprint("user-", i%3), strings.Repeat(fmt.Sprint(i/2), 4))
			if i == 5 {
				v.Action, v.RestoredFrom = VersionRestore, 2
			}
			if err := tx.QueryRow(ctx, insertVersionSQL, insertVersionArgs(v)...).Scan(&v.ChangedAt); err != nil {
				return err
			}
			// Another entry's versions between this one's.
			if _, err := tx.Exec(ctx, insertVersionSQL, insertVersionArgs(versionAt("acme", "other", n, "other", "x", "FF"))...); err != nil {
				return err
			}
			want = append([]VersionSummary{{Version: n, Action: v.Action, EntryVersion: n, RestoredFrom: v.RestoredFrom,
				ChangedAt: v.ChangedAt, ChangedBy: v.ChangedBy, Name: name, Type: v.Type, Source: "file",
				FingerprintSHA256: v.Meta.FingerprintSHA256, NotAfter: v.Meta.NotAfter}}, want...)
		}
		return nil
	}))
	same := func(want, got []VersionSummary) {
		t.Helper()
		require.Len(t, got, len(want))
		for i := range want {
			require.True(t, want[i].ChangedAt.Equal(got[i].ChangedAt))
			require.True(t, want[i].NotAfter.Equal(got[i].NotAfter))
			got[i].ChangedAt, got[i].NotAfter = want[i].ChangedAt, want[i].NotAfter
		}
		require.Equal(t, want, got)
	}

	all, more, err := ListVersionsScoped(ctx, pool, "acme", "root", 0, 100)
	require.NoError(t, err)
	require.False(t, more)
	same(want, all)

	page, more, err := ListVersionsScoped(ctx, pool, "acme", "root", 0, 3)
	require.NoError(t, err)
	require.True(t, more)
	same(want[:3], page)
	page, more, err = ListVersionsScoped(ctx, pool, "acme", "root", page[2].Version, 3)
	require.NoError(t, err)
	require.True(t, more)
	same(want[3:6], page)
	page, more, err = ListVersionsScoped(ctx, pool, "acme", "root", page[2].Version, 3)
	require.NoError(t, err)
	require.False(t, more)
	same(want[6:], page)

	none, more, err := ListVersionsScoped(ctx, pool, "other-tenant", "root", 0, 100)
	require.NoError(t, err)
	require.False(t, more)
	require.Empty(t, none, "another tenant sees none of them")
}

// TestListVersionsIsIndexOnly holds the listing to the columns of its covering index
// (migration 00009): with every other way to read the table priced out, the plan is an
// index-only scan of entry_versions_listing, which it cannot be once the query reads a
// column the index does not hold.
func TestListVersionsIsIndexOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := openPool(t)

	var plan []string
	require.NoError(t, db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		for _, off := range []string{"seqscan", "bitmapscan", "indexscan", "sort"} {
			if _, err := tx.Exec(ctx, "SET LOCAL enable_"+off+" = off"); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, "EXPLAIN "+listVersionsSQL, "acme", "root", int64(1)<<62, 1001)
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}))
	text := strings.Join(plan, "\n")
	require.Contains(t, text, "Index Only Scan Backward using entry_versions_listing", text)
	require.NotContains(t, text, "Sort", text)
}
