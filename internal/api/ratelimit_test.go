package api_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/apitest"
)

// TestRateLimitPerTenant: a tenant that spends its bucket is answered 429 with Retry-After
// and the RateLimit headers, while another tenant is served; health stays exempt. The rate
// is so low that no token comes back while the test runs.
func TestRateLimitPerTenant(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{RateLimit: api.RateLimit{TenantRate: 0.001, TenantBurst: 3, SubjectRate: 0.001, SubjectBurst: 2}})
	list := func(tok string) *apitest.Response {
		return env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: tok})
	}
	busy := env.Token(t, "busy", "viewer")
	res := list(busy)
	require.Equal(t, http.StatusOK, res.Status)
	require.Equal(t, `"subject";q=2;w=2000, "tenant";q=3;w=3000`, res.Header.Get("RateLimit-Policy"))
	require.Equal(t, `"subject";r=1;t=1000, "tenant";r=2;t=1000`, res.Header.Get("RateLimit"))
	require.Equal(t, http.StatusOK, list(busy).Status)

	// The subject's bucket is empty: refused, and the refusal costs the tenant nothing.
	res = list(busy)
	require.Equal(t, http.StatusTooManyRequests, res.Status, "%s", res.Body)
	require.Equal(t, "Too Many Requests", res.JSON(t)["error"])
	after, err := strconv.Atoi(res.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Greater(t, after, 0)
	require.Contains(t, res.Header.Get("RateLimit"), `"subject";r=0;`)

	// Another subject of the same tenant takes the tenant's last token, then the tenant is out.
	other := env.Token(t, "busy", "editor")
	require.Equal(t, http.StatusOK, list(other).Status)
	res = list(other)
	require.Equal(t, http.StatusTooManyRequests, res.Status)
	require.Contains(t, res.Header.Get("RateLimit"), `"tenant";r=0;`)

	// Another tenant is served all along, and health checks are never limited.
	calm := env.Token(t, "calm", "viewer")
	require.Equal(t, http.StatusOK, list(calm).Status)
	for range 5 {
		require.Equal(t, http.StatusOK, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/readyz"}).Status)
		require.Equal(t, http.StatusOK, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/healthz"}).Status)
	}
}

// TestRefusalsDrawFromTheSubjectOnly: a runtime token sent to operations its role may not
// call is refused 403, then 429 once its own bucket is empty; none of it is charged to the
// tenant, whose admin is still served its whole bucket.
func TestRefusalsDrawFromTheSubjectOnly(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{RateLimit: api.RateLimit{TenantRate: 0.001, TenantBurst: 3, SubjectRate: 0.001, SubjectBurst: 3}})
	list := func(tok string) *apitest.Response {
		return env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: tok})
	}
	runtime := env.Token(t, "plant", "runtime")
	var refused *apitest.Response
	for i := range 3 {
		refused = list(runtime)
		require.Equal(t, http.StatusForbidden, refused.Status, "refusal %d: %s", i, refused.Body)
	}
	for range 5 {
		res := list(runtime)
		require.Equal(t, http.StatusTooManyRequests, res.Status, "%s", res.Body)
		require.NotEmpty(t, res.Header.Get("Retry-After"))
		require.Contains(t, res.Header.Get("RateLimit"), `"subject";r=0;`)
	}

	admin := env.Token(t, "plant", "admin")
	for i := range 3 {
		res := list(admin)
		require.Equal(t, http.StatusOK, res.Status, "admin request %d after the runtime's refusals: %s", i, res.Body)
	}
	require.Contains(t, list(admin).Header.Get("RateLimit"), `"tenant";r=0;`, "the admin spent the tenant's bucket itself")
	require.Equal(t, `"subject";q=3;w=3000`, refused.Header.Get("RateLimit-Policy"), "a refusal draws from the subject's bucket alone")
}

// TestPagesDrawFromTheSubjectBucket: the web UI's pages take from the signed-in subject's
// bucket, the one its API requests take from: past it, a page is 429 with Retry-After, and
// so is the subject's next API request.
func TestPagesDrawFromTheSubjectBucket(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{RateLimit: api.RateLimit{TenantRate: 0.001, TenantBurst: 100, SubjectRate: 0.001, SubjectBurst: 3}})
	viewer := env.Token(t, "plant", "viewer")
	page := func() *apitest.Response {
		return env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/certs", Token: viewer, Cookie: true})
	}
	for i := range 2 {
		res := page()
		require.Equal(t, http.StatusOK, res.Status, "page %d", i)
		require.Contains(t, res.Header.Get("RateLimit"), `"subject";r=`)
	}
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: viewer})
	require.Equal(t, http.StatusOK, res.Status, "the API request takes the bucket's last token")
	res = page()
	require.Equal(t, http.StatusTooManyRequests, res.Status, "%s", res.Body)
	after, err := strconv.Atoi(res.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Greater(t, after, 0)
	require.Contains(t, string(res.Body), "Too Many Requests")
	require.Equal(t, http.StatusTooManyRequests, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs", Token: viewer}).Status)

	// Another user of the tenant has a bucket of its own.
	other := env.Token(t, "plant", "editor")
	require.Equal(t, http.StatusOK, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/certs", Token: other, Cookie: true}).Status)
}
