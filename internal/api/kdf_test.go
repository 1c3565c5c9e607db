package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/kdf"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

// kdfPass protects the keys of these tests.
const kdfPass = "Kdf#flood-pass-77"

// gatedBudget is a real budget with a hand on it: it counts what it admits per tenant, and
// holds the first admission of tenant gated, as a long derivation holds its slot, until
// open is closed.
type gatedBudget struct {
	*kdf.Budget
	gated  string
	open   chan struct{}
	opened sync.Once

	mu       sync.Mutex
	admitted map[string]int
}

// newGatedBudget returns the budget for env, opened when the test ends whatever happens
// (before the server waits for its requests to drain).
func newGatedBudget(t *testing.T, c kdf.Config, gated string) (*gatedBudget, *apitest.Env) {
	g := &gatedBudget{Budget: kdf.New(c), gated: gated, open: make(chan struct{}), admitted: map[string]int{}}
	env := apitest.New(t, apitest.Options{KDF: g})
	t.Cleanup(g.release)
	return g, env
}

// release lets the held derivation go on.
func (g *gatedBudget) release() { g.opened.Do(func() { close(g.open) }) }

func (g *gatedBudget) Acquire(ctx context.Context, tenant string, memory int64) (func(), error) {
	release, err := g.Budget.Acquire(ctx, tenant, memory)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.admitted[tenant]++
	first := tenant == g.gated && g.admitted[tenant] == 1
	g.mu.Unlock()
	if first {
		<-g.open
	}
	return release, nil
}

func (g *gatedBudget) count(tenant string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitted[tenant]
}

// waitUntil polls cond; the deadline only turns a hang into a failure.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// answer is one response, or the error of a request whose client gave up.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// send posts body to path with tok from a goroutine of its own; the answer arrives on
// the returned channel.
func send(ctx context.Context, env *apitest.Env, path, tok string, body any) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.URL+path, bytes.NewReader(b))
		if err != nil {
			ch <- answer{err: err}
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		ch <- answer{status: resp.StatusCode, header: resp.Header, body: rb, err: err}
	}()
	return ch
}

// requireBusy checks a refusal by the budget: 503, a Retry-After of whole seconds, the
// API's error body.
func requireBusy(t *testing.T, status int, header http.Header, body []byte) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, status, "%s", body)
	after, err := strconv.Atoi(header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After %q", header.Get("Retry-After"))
	require.GreaterOrEqual(t, after, 1)
	var e struct{ Error, Message string }
	require.NoError(t, json.Unmarshal(body, &e), "%s", body)
	require.Equal(t, "Service Unavailable", e.Error)
	require.Contains(t, e.Message, "retry after the seconds in Retry-After")
}

// scryptPair is a client pair whose key is encrypted under scrypt N=2^14, r=8, p=1: 16 MiB
// and a good fraction of a second of one core per derivation, well inside the bounds.
func scryptPair(t *testing.T, cn string) obj {
	t.Helper()
	c := mt.NewSelfSigned(t, mt.Options{CommonName: cn})
	return obj{"name": cn, "type": "client-pair", "source": "inline", "certPem": string(c.CertPEM()),
		"keyPem": string(mt.ScryptKeyPEM(t, c.Key, kdfPass, 1<<14, 8, 1)), "keyPassphrase": kdfPass}
}

// TestKDFFloodIsRefusedFairly: one editor floods validates whose keys are expensive but
// allowed. What the budget cannot hold or queue is answered 503 with Retry-After at once
// (a create too, which then saves nothing), while another tenant's validate is admitted
// and its list answered; the queued ones finish once the slot frees.
func TestKDFFloodIsRefusedFairly(t *testing.T) {
	t.Parallel()
	budget, env := newGatedBudget(t, kdf.Config{Memory: 64 << 20, Slots: 2, Queue: 4}, "flood-a")
	tokA, tokB := env.Token(t, "flood-a", "editor"), env.Token(t, "flood-b", "editor")
	pairA := scryptPair(t, "flood-a")

	// The tenant's share is one slot and two places in the queue: three of twelve stay.
	const flood, kept = 12, 3
	answers := make(chan answer, flood)
	for range flood {
		go func() { answers <- <-send(context.Background(), env, "/api/v1/certs/validate", tokA, pairA) }()
	}
	for range flood - kept {
		a := <-answers
		require.NoError(t, a.err)
		requireBusy(t, a.status, a.header, a.body)
	}
	st := budget.Stats()
	require.Equal(t, 1, st.Running, "the tenant holds its one slot")
	require.Equal(t, 2, st.Queued, "and its two places in the queue")

	// A create refused the same way saves nothing.
	create := obj{"id": "refused"}
	for k, v := range pairA {
		create[k] = v
	}
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tokA, Body: create})
	requireBusy(t, res.Status, res.Header, res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/refused", Token: tokA})
	require.Equal(t, http.StatusNotFound, res.Status)

	// Meanwhile another tenant derives (the second slot) and lists.
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tokB, Body: scryptPair(t, "flood-b")})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, true, res.JSON(t)["valid"], "%s", res.Body)
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: env.Token(t, "flood-b", "viewer")})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, 1, budget.count("flood-b"))

	budget.release()
	for range kept {
		a := <-answers
		require.NoError(t, a.err)
		require.Equal(t, http.StatusOK, a.status, "%s", a.body)
		require.Contains(t, string(a.body), `"valid":true`)
	}
	require.Equal(t, kept, budget.count("flood-a"), "only what was admitted derived")
	require.Equal(t, kdf.Stats{}, budget.Stats())
	require.NotContains(t, env.Logs.String(), kdfPass)
	require.NotContains(t, env.Logs.String(), "-----BEGIN")
}

// TestQueuedClientThatLeavesIsNotDerived: a request waiting for a derivation slot whose
// client disconnects leaves the queue, and its key is never derived.
func TestQueuedClientThatLeavesIsNotDerived(t *testing.T) {
	t.Parallel()
	budget, env := newGatedBudget(t, kdf.Config{Memory: 64 << 20, Slots: 2, Queue: 4}, "leave-a")
	tok := env.Token(t, "leave-a", "editor")
	pair := scryptPair(t, "leave-a")

	first := send(context.Background(), env, "/api/v1/certs/validate", tok, pair)
	waitUntil(t, "the first derivation to be admitted", func() bool { return budget.Stats().Running == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	second := send(ctx, env, "/api/v1/certs/validate", tok, pair)
	waitUntil(t, "the second request to queue", func() bool { return budget.Stats().Queued == 1 })

	cancel() // the client goes away
	a := <-second
	require.ErrorIs(t, a.err, context.Canceled)
	waitUntil(t, "the server to see the client go", func() bool { return budget.Stats().Queued == 0 })

	budget.release()
	a = <-first
	require.NoError(t, a.err)
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	require.Equal(t, 1, budget.count("leave-a"), "the request that left derived nothing")
	require.Equal(t, kdf.Stats{}, budget.Stats())
}

// switchBudget is a real budget that, once busy is set, refuses every derivation as a
// full budget does.
type switchBudget struct {
	*kdf.Budget
	busy atomic.Bool
}

func (s *switchBudget) Acquire(ctx context.Context, tenant string, memory int64) (func(), error) {
	if s.busy.Load() {
		return nil, &kdf.BusyError{RetryAfter: 3 * time.Second}
	}
	return s.Budget.Acquire(ctx, tenant, memory)
}

// TestDerivingOperationsAnswer503WhenBusy: every operation that derives a key, for inline
// material or a file entry with a passphrase file, answers a full budget with 503 and
// Retry-After and changes nothing; a deploy whose direct file cannot be checked now is not
// held up for it, and says so in a warning.
func TestDerivingOperationsAnswer503WhenBusy(t *testing.T) {
	t.Parallel()
	budget := &switchBudget{Budget: kdf.New(kdf.Config{})}
	o := tempRoots()
	o.KDF = budget
	env := apitest.New(t, o)
	tok := env.Token(t, "busy", "editor")
	c := mt.NewSelfSigned(t, mt.Options{CommonName: "busy-file"})
	pfx, err := pkcs12.Modern2023.Encode(c.Key, c.Cert, nil, kdfPass)
	require.NoError(t, err)
	dir := t.TempDir()
	p12 := apitest.WriteFile(t, dir, "busy.p12", pfx)
	pass := apitest.WriteFile(t, dir, "busy.pass", []byte(kdfPass+"\n"))
	key := apitest.WriteFile(t, dir, "busy.key", c.KeyPEM())

	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: tok, Body: obj{
		"id": "busy-file", "name": "p12 file", "type": "client-pair", "source": "file", "certPath": p12, "passphraseFile": pass}})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("n1", "tcp-out", obj{"tls": obj{"clientCertRef": "busy-file"}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	budget.busy.Store(true)
	for _, r := range []apitest.Request{
		{Method: http.MethodPost, Path: "/api/v1/certs/validate", Body: scryptPair(t, "busy-inline")},
		{Method: http.MethodPost, Path: "/api/v1/certs", Body: func() obj { b := scryptPair(t, "busy-inline"); b["id"] = "busy-inline"; return b }()},
		{Method: http.MethodPut, Path: "/api/v1/certs/busy-file", Body: obj{"notes": "re-read"}},
		{Method: http.MethodPost, Path: "/api/v1/certs/busy-file/versions/1/restore"},
		{Method: http.MethodGet, Path: "/api/v1/certs/busy-file/certificate"},
		{Method: http.MethodGet, Path: "/api/v1/flows/f1/nodes/n1/tls"},
	} {
		r.Token = tok
		res := env.Do(t, r)
		requireBusy(t, res.Status, res.Header, res.Body)
		require.Equal(t, "3", res.Header.Get("Retry-After"), "%s %s", r.Method, r.Path)
	}
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/busy-file", Token: tok})
	require.Equal(t, http.StatusOK, res.Status)
	require.Equal(t, `"1"`, res.Header.Get("ETag"), "nothing changed")
	res = env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/busy-inline", Token: tok})
	require.Equal(t, http.StatusNotFound, res.Status, "nothing saved")

	// A direct PKCS#12 file a deploy would check: not checked now, and said so.
	res = deploy(t, env, tok, workspaceOf(flow("f1", node("n1", "tcp-out", obj{"tls": obj{"clientCertFile": p12, "clientKeyFile": key}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, string(res.Body), "was not checked now")
	require.NotContains(t, env.Logs.String(), kdfPass)
}
