package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/repo"
)

// TestConcurrentCreatesReachTheFileInOrder: editors create entries of one tenant at once
// while the export loop writes credentials.json. Every file written carries a generation
// no lower than the one before and every entry of the one before (creates only add), and
// once the tenant's generation after the last acknowledged create is on disk, the file
// holds every acknowledged entry.
func TestConcurrentCreatesReachTheFileInOrder(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{ExportLoop: true})
	const tenant, workers, each = "orderly", 8, 12
	tok := env.Token(t, tenant, "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	path := credfile.Path(env.DataDir, tenant)

	var (
		watchErr  atomic.Value
		lastGen   atomic.Int64
		lastCount atomic.Int64
		stop      = make(chan struct{})
		watched   = make(chan struct{})
	)
	// read opens the file on disk; ok is false while there is none yet.
	read := func() (doc *credfile.Document, gen int64, ok bool, err error) {
		data, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return nil, 0, false, nil
		}
		if err != nil {
			return nil, 0, false, err
		}
		doc, h, err := credfile.Open(env.Keys.Opener(), data, tenant)
		if err != nil {
			return nil, 0, false, err
		}
		return doc, h.Generation, true, nil
	}
	go func() {
		defer close(watched)
		seen := map[string]bool{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			doc, gen, ok, err := read()
			if err != nil {
				watchErr.Store(err.Error())
				return
			}
			if ok {
				if gen < lastGen.Load() {
					watchErr.Store(fmt.Sprintf("the file went back from generation %d to %d", lastGen.Load(), gen))
					return
				}
				ids := map[string]bool{}
				for _, e := range doc.Entries {
					ids[e.ID] = true
				}
				for id := range seen {
					if !ids[id] {
						watchErr.Store(fmt.Sprintf("generation %d lost entry %s of an earlier file", gen, id))
						return
					}
				}
				seen = ids
				lastGen.Store(gen)
				lastCount.Store(int64(len(ids)))
			}
			time.Sleep(time.Millisecond)
		}
	}()

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked []string
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-e%02d", w, i)
				b, _ := json.Marshal(inlineCA(id, ca))
				res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: b})
				if res.Status == http.StatusCreated {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				} else {
					t.Errorf("POST %s: %d %s", id, res.Status, res.Body)
				}
			}
		})
	}
	wg.Wait()
	require.Len(t, acked, workers*each)
	want, err := repo.GetGeneration(context.Background(), env.Pool, tenant)
	require.NoError(t, err)
	// Every create moved the generation once: concurrent creates did not share one.
	require.EqualValues(t, workers*each, want)

	require.Eventually(t, func() bool { return lastGen.Load() >= want || watchErr.Load() != nil },
		30*time.Second, 5*time.Millisecond, "the file never reached generation %d", want)
	close(stop)
	<-watched
	require.Nil(t, watchErr.Load())
	doc, gen, ok, err := read()
	require.NoError(t, err)
	require.True(t, ok)
	require.GreaterOrEqual(t, gen, want)
	ids := map[string]bool{}
	for _, e := range doc.Entries {
		ids[e.ID] = true
	}
	for _, id := range acked {
		require.True(t, ids[id], "acknowledged entry %s is not in the file of generation %d", id, gen)
	}
	require.EqualValues(t, len(acked), lastCount.Load())
}

// TestCreateRacingPutOfTheSameID: a POST and a PUT that creates race for one new ID, 25
// times. The POST takes no tenant lock, so the two meet at the entry's primary key: one
// waits for the other and every answer is one a client expects (one creates, the other
// is a duplicate or, a PUT that lost the race being tried again, an update), never a 500.
func TestCreateRacingPutOfTheSameID(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	tok := env.Token(t, "racers", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	for i := range 25 {
		id := fmt.Sprintf("race-%02d", i)
		body, _ := json.Marshal(inlineCA(id, ca))
		put := inlineCA(id, ca)
		delete(put, "id")
		var wg sync.WaitGroup
		var posted, putted int
		wg.Go(func() {
			posted = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body}).Status
		})
		wg.Go(func() {
			putted = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/" + id, Token: tok, Body: put}).Status
		})
		wg.Wait()
		require.Contains(t, []int{http.StatusCreated, http.StatusConflict}, posted, "POST %s", id)
		require.Contains(t, []int{http.StatusCreated, http.StatusOK}, putted, "PUT %s", id)
		if posted == http.StatusCreated {
			require.Equal(t, http.StatusOK, putted, "PUT %s after the POST created it", id)
		}
	}
	require.NotContains(t, env.Logs.String(), `"status":500`)
}

// TestCreatesDoNotQueueBehindTheTenantsWriters: while a transaction holds what a write of
// the tenant in progress holds (the tenant's lock, taken by every update, delete and
// deploy, and the lock of its audit chain's head, taken while records are chained), a
// POST of a new entry commits and answers at once, and its record joins the chain after.
// A PUT of an existing entry still waits for the writer before it (writes other than
// creates stay ordered) and answers once it ends.
func TestCreatesDoNotQueueBehindTheTenantsWriters(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	const tenant = "busy"
	ctx := context.Background()
	tok := env.Token(t, tenant, "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, tok, inlineCA("first", ca))
	_, err := audit.Chain(ctx, env.Pool, nil, tenant) // the head row exists from here on
	require.NoError(t, err)

	held, err := env.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = held.Rollback(ctx) }()
	_, err = held.Exec(ctx, `SELECT set_config('loopze.tenant', $1, true)`, tenant)
	require.NoError(t, err)
	_, err = repo.BumpGeneration(ctx, held, tenant)
	require.NoError(t, err)
	_, err = held.Exec(ctx, `SELECT 1 FROM audit_heads WHERE tenant_id = $1 FOR UPDATE`, tenant)
	require.NoError(t, err)

	put := inlineCA("first", ca)
	delete(put, "id")
	put["notes"] = "after the writer"
	putDone := make(chan int, 1)
	go func() {
		putDone <- env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/first", Token: tok, Body: put}).Status
	}()
	postDone := make(chan int, 1)
	body, _ := json.Marshal(inlineCA("second", ca))
	go func() {
		postDone <- env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: body}).Status
	}()
	select {
	case status := <-postDone:
		require.Equal(t, http.StatusCreated, status)
	case <-time.After(30 * time.Second):
		_ = held.Rollback(ctx)
		t.Fatal("the POST waited for the tenant's writer")
	}
	select {
	case status := <-putDone:
		t.Fatalf("the PUT answered %d while the writer before it held the tenant", status)
	default:
	}
	require.NoError(t, held.Rollback(ctx))
	require.Equal(t, http.StatusOK, <-putDone)

	// Every write is in one unbroken chain: create, create, update (the POST and the PUT
	// in the order they committed).
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/audit", Token: env.Token(t, tenant, "admin")})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	var page struct {
		Items []struct {
			Seq    int64  `json:"seq"`
			Action string `json:"action"`
			Target string `json:"target"`
		} `json:"items"`
	}
	require.NoError(t, json.Unmarshal(res.Body, &page))
	got := []string{}
	for _, it := range page.Items {
		got = append(got, fmt.Sprintf("%d %s %s", it.Seq, it.Action, it.Target))
	}
	require.Equal(t, []string{"3 entry.update entry:first", "2 entry.create entry:second", "1 entry.create entry:first"}, got)
	_, err = (&audit.Service{Pool: env.Pool, Keys: env.Keys.Audit()}).VerifyTenant(ctx, tenant)
	require.NoError(t, err)
}
