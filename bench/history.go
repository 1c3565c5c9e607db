package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"
)

// historyEntry is the entry whose history the versions scenario lists.
const historyEntry = "history-1000"

// historyVersions is how many versions it gets (the bench server keeps them all).
const historyVersions = 1000

// scenarioVersions: GET /api/v1/certs/{id}/versions?limit=1000 of an entry with 1,000
// versions, made through the API (one POST, then notes-only PUTs), in the POST tenant.
func (b *bench) scenarioVersions(ctx context.Context) error {
	do := func(method, path string, body []byte, want int) error {
		resp, err := b.client.Do(b.request(method, path, tenantPost+"/editor", body).WithContext(ctx))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
		}
		return nil
	}
	// The history is made once; the later runs list the same 1,000 versions.
	if b.run == 1 {
		if err := do(http.MethodPost, "/api/v1/certs", b.postBody(historyEntry, 0), http.StatusCreated); err != nil {
			return fmt.Errorf("seed the history: %w", err)
		}
		for i := 1; i < historyVersions; i++ {
			body, _ := json.Marshal(map[string]string{"notes": fmt.Sprintf("revision %d", i)})
			if err := do(http.MethodPut, "/api/v1/certs/"+historyEntry, body, http.StatusOK); err != nil {
				return fmt.Errorf("seed the history: %w", err)
			}
		}
	}
	path := fmt.Sprintf("/api/v1/certs/%s/versions?limit=%d", historyEntry, historyVersions)
	req := func(_, _ int, _ *rand.Rand) *http.Request {
		return b.request(http.MethodGet, path, tenantPost+"/editor", nil)
	}
	res := runLoad(ctx, b.s.Concurrency, b.s.Warmup, b.s.Duration, b.httpOp(req, http.StatusOK))
	r := underRow(loadRow(fmt.Sprintf("GET /certs/{id}/versions, %d versions", historyVersions), res), "p99",
		res.Hist.Quantile(0.99), 20*time.Millisecond)
	r.Note = joinNote(r.Note, "one page of all of them, no PEM")
	b.add(r)
	b.profileHTTP(ctx, r, "versions", b.s.Concurrency, req, http.StatusOK)
	return nil
}
