package catalog_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/testdb"
)

// seedReads starts a replica over a tenant "big" of benchEntries inline pairs, announced
// and unchanged since.
func seedReads(b *testing.B) *replica {
	ctx := context.Background()
	rep := newReplica(b, testdb.URL(b), b.TempDir())
	const n = benchEntries
	cert, key := materialtest.Pair(b, materialtest.Options{})
	m, issues := material.Inspect(material.ClientPair, secret.PEM(cert), secret.PEM(key), material.PEMFields, time.Now())
	require.Empty(b, issues)
	entries := make([]*repo.Entry, 0, n)
	ring, err := rep.svc.Keys.Ring(ctx, "big")
	require.NoError(b, err)
	for i := range n {
		id := fmt.Sprintf("entry-%05d", i)
		sealed, err := sealing.SealPair(ring, sealing.Place{Tenant: "big", EntryID: id}, cert, key)
		require.NoError(b, err)
		entries = append(entries, &repo.Entry{TenantID: "big", ID: id, Name: id, Type: material.ClientPair,
			Source: "inline", Sealed: sealed, Meta: m.Metadata, Version: 1})
	}
	rep.drain()
	require.NoError(b, db.InTenant(ctx, rep.svc.Pool, "big", func(tx pgx.Tx) error {
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
	rep.awaitChange(b, "big")
	return rep
}

const benchEntries = 10000

// benchReads measures the reads the cache serves, over a tenant of 10,000 inline pairs:
// "database" without the cache (every read a round trip), "cache" with it, the tenant
// unchanged.
func benchReads(b *testing.B, read func(ctx context.Context, s *catalog.Service, id string) error) {
	ctx := context.Background()
	rep := seedReads(b)
	const n = benchEntries
	uncached := &catalog.Service{Pool: rep.svc.Pool, Keys: rep.svc.Keys, Logger: rep.svc.Logger}
	for _, bc := range []struct {
		name string
		svc  *catalog.Service
	}{{"database", uncached}, {"cache", rep.svc}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rnd := rand.New(rand.NewPCG(rand.Uint64(), 1))
				for pb.Next() {
					if err := read(ctx, bc.svc, fmt.Sprintf("entry-%05d", rnd.IntN(n))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkGet is what GET /api/v1/certs/{id} asks of the catalogue.
func BenchmarkGet(b *testing.B) {
	benchReads(b, func(ctx context.Context, s *catalog.Service, id string) error {
		_, err := s.Get(ctx, "big", id)
		return err
	})
}

// BenchmarkList is a random one of the 100 pages of 100 a client walking the list asks
// for (the cursors the API hands out).
func BenchmarkList(b *testing.B) {
	benchReads(b, func(ctx context.Context, s *catalog.Service, id string) error {
		var page int
		if _, err := fmt.Sscanf(id, "entry-%d", &page); err != nil {
			return err
		}
		after := ""
		if page /= 100; page > 0 {
			after = fmt.Sprintf("entry-%05d", page*100-1)
		}
		_, _, err := s.List(ctx, "big", repo.ListFilter{After: after, Limit: 100})
		return err
	})
}

// BenchmarkLookup is what connection init asks of the catalogue (BuildTLSConfig's entries
// source): one entry with its sealed material.
func BenchmarkLookup(b *testing.B) {
	benchReads(b, func(ctx context.Context, s *catalog.Service, id string) error {
		found, err := s.Lookup(ctx, "big", []string{id})
		if err == nil && len(found) != 1 {
			err = fmt.Errorf("lookup %s found %d entries", id, len(found))
		}
		return err
	})
}

// BenchmarkHTTPGet is GET /api/v1/certs/{id} through the server's whole handler (JWT,
// middleware, Huma, JSON) over the read cache: "handler" calls ServeHTTP directly,
// "loopback" goes through net/http on a loopback socket with keep-alive, client included.
func BenchmarkHTTPGet(b *testing.B) {
	rep := seedReads(b)
	secretKey := []byte("bench-hmac-secret-0123456789abcdef")
	verifier, err := auth.NewVerifier(auth.Config{HMACSecret: secretKey})
	require.NoError(b, err)
	tok, err := auth.Mint(secretKey, auth.Principal{Subject: "bench", Tenant: "big", Role: auth.Viewer}, time.Hour, "", "", time.Now())
	require.NoError(b, err)
	h := api.New(api.Deps{Logger: logging.Discard(), Pool: rep.svc.Pool, Version: "bench", Verifier: verifier, Catalog: rep.svc}).Handler
	get := func(rnd *rand.Rand, base string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, base+fmt.Sprintf("/api/v1/certs/entry-%05d", rnd.IntN(benchEntries)), nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return r
	}
	list := func(*rand.Rand, string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "http://bench/api/v1/certs?limit=100", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return r
	}
	b.Run("list-handler", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			rnd := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for pb.Next() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, list(rnd, ""))
				if rec.Code != http.StatusOK {
					b.Errorf("GET list: %d %s", rec.Code, rec.Body)
					return
				}
			}
		})
	})
	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			rnd := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for pb.Next() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, get(rnd, "http://bench"))
				if rec.Code != http.StatusOK {
					b.Errorf("GET: %d %s", rec.Code, rec.Body)
					return
				}
			}
		})
	})
	b.Run("loopback", func(b *testing.B) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			rnd := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for pb.Next() {
				res, err := client.Do(get(rnd, srv.URL))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				if res.StatusCode != http.StatusOK {
					b.Errorf("GET: %d", res.StatusCode)
					return
				}
			}
		})
	})
}
