package fileexport

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/testdb"
)

// BenchmarkExportTenant10k measures a forced export of a tenant of 10,000 inline pairs.
func BenchmarkExportTenant10k(b *testing.B) {
	bb := setupBench(b)
	ctx := context.Background()
	x := &Exporter{Pool: bb.pool, Keys: bb.keys, DataDir: bb.dataDir}
	b.ResetTimer()
	for b.Loop() {
		res, err := x.ExportTenant(ctx, "big", true)
		require.NoError(b, err)
		require.Equal(b, 10000, res.Entries)
	}
}

// BenchmarkExportTenant10kOneChange measures the export that follows a change of one entry
// of a tenant of 10,000 inline pairs: "full" encodes every entry again (no cache),
// "incremental" only the changed one. The change itself is not timed.
func BenchmarkExportTenant10kOneChange(b *testing.B) {
	bb := setupBench(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		bytes int64
	}{{"full", -1}, {"incremental", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			x := &Exporter{Pool: bb.pool, Keys: bb.keys, DataDir: b.TempDir(), EncodedCacheBytes: bc.bytes}
			_, err := x.ExportTenant(ctx, "big", false)
			require.NoError(b, err)
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				_, err := bb.catalog.Put(ctx, "big", catalog.Input{ID: "entry-00042", Notes: ptr(fmt.Sprintf("change %d", i))}, catalog.Precondition{})
				require.NoError(b, err)
				b.StartTimer()
				res, err := x.ExportTenant(ctx, "big", false)
				require.NoError(b, err)
				require.True(b, res.Written)
			}
		})
	}
}

func setupBench(b *testing.B) *bundle {
	b.Helper()
	ctx := context.Background()
	bb := setupOn(b, testdb.URL(b))
	cert, key := materialtest.Pair(b, materialtest.Options{})
	m, issues := material.Inspect(material.ClientPair, secret.PEM(cert), secret.PEM(key), material.PEMFields, time.Now())
	require.Empty(b, issues)
	entries := make([]*repo.Entry, 0, 10000)
	ring := bb.ring(b, "big")
	for i := range 10000 {
		id := fmt.Sprintf("entry-%05d", i)
		sealed, err := sealing.SealPair(ring, sealing.Place{Tenant: "big", EntryID: id}, cert, key)
		require.NoError(b, err)
		entries = append(entries, &repo.Entry{TenantID: "big", ID: id, Name: id, Type: material.ClientPair,
			Source: "inline", Sealed: sealed, Meta: m.Metadata, Version: 1})
	}
	require.NoError(b, db.InTenant(ctx, bb.pool, "big", func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(ctx, tx, "big"); err != nil {
			return err
		}
		// Rows alone, without history or audit: a seed of the read paths, not a write.
		writes := make([]repo.EntryWrite, len(entries))
		for i, e := range entries {
			writes[i] = repo.EntryWrite{Row: e}
		}
		return repo.WriteEntries(ctx, tx, "big", false, writes)
	}))
	return bb
}
