package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// BenchmarkWrites measures POST of new inline pairs and notes-only PUTs over HTTP, eight
// clients at once in one tenant: what history and audit add to every write.
func BenchmarkWrites(b *testing.B) {
	env := apitest.New(b)
	tok := env.Token(b, "acme", "editor")
	ca := materialtest.NewCA(b, materialtest.Options{})
	pair := ca.Issue(b, materialtest.Options{CommonName: "bench"})
	var n atomic.Int64
	b.Run("POST", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				res := env.Do(b, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok,
					Body: inlinePair(fmt.Sprint("p", n.Add(1)), pair)})
				if res.Status != http.StatusCreated {
					b.Fatalf("POST: %d %s", res.Status, res.Body)
				}
			}
		})
	})
	for i := range 64 {
		env.Do(b, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: inlinePair(fmt.Sprint("u", i), pair)})
	}
	b.Run("PUT", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				res := env.Do(b, apitest.Request{Method: http.MethodPut, Path: fmt.Sprint("/api/v1/certs/u", i%64), Token: tok,
					Body: obj{"notes": fmt.Sprint("note ", i)}})
				if res.Status != http.StatusOK {
					b.Fatalf("PUT: %d %s", res.Status, res.Body)
				}
			}
		})
	})
}

// seedVersions gives entry root of tenant acme 1,000 versions (one POST, then notes-only
// PUTs) and returns an editor's token.
func seedVersions(b *testing.B, env *apitest.Env) string {
	tok := env.Token(b, "acme", "editor")
	env.Do(b, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok,
		Body: inlineCA("root", materialtest.NewCA(b, materialtest.Options{}))})
	for i := 1; i < 1000; i++ {
		res := env.Do(b, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/root", Token: tok, Body: obj{"notes": fmt.Sprint(i)}})
		if res.Status != http.StatusOK {
			b.Fatalf("PUT: %d", res.Status)
		}
	}
	return tok
}

// BenchmarkListVersions lists all 1,000 versions of one entry in one page, over HTTP
// through the contract check of every answer.
func BenchmarkListVersions(b *testing.B) {
	env := apitest.New(b)
	tok := seedVersions(b, env)
	b.ResetTimer()
	for b.Loop() {
		res := env.Do(b, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/root/versions?limit=1000", Token: tok})
		if res.Status != http.StatusOK || len(res.Body) < 1000*200 {
			b.Fatalf("list: %d, %d bytes", res.Status, len(res.Body))
		}
	}
}

// BenchmarkListVersionsHandler is the bench's versions row in process: eight clients at
// once calling the server's handler (auth, Huma, the catalogue, PostgreSQL) for the page
// of all 1,000 versions, without the test's contract check. ns/op is the inverse of the
// throughput, so with two cores it is about a quarter of each call's latency.
func BenchmarkListVersionsHandler(b *testing.B) {
	env := apitest.New(b)
	tok := seedVersions(b, env)
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "/api/v1/certs/root/versions?limit=1000", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			rec := httptest.NewRecorder()
			env.Server.Handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK || rec.Body.Len() < 1000*200 {
				b.Fatalf("list: %d, %d bytes", rec.Code, rec.Body.Len())
			}
		}
	})
}
