package api

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"golang.org/x/time/rate"

	"github.com/loopze/certstore/internal/auth"
)

// RateLimit sets the token buckets every authenticated request draws from: one per tenant,
// so one tenant's automation cannot starve the others, and one per subject within it. A
// rate of zero turns that bucket off.
type RateLimit struct {
	// TenantRate is the sustained requests per second of one tenant; TenantBurst its bucket.
	TenantRate  float64
	TenantBurst int
	// SubjectRate and SubjectBurst are the same for one token subject of a tenant.
	SubjectRate  float64
	SubjectBurst int
}

// limiterSweepAt is the bucket count past which full (idle) buckets are forgotten.
const limiterSweepAt = 10000

// limiters holds the buckets of one kind, keyed by tenant or tenant and subject.
type limiters struct {
	name  string
	limit rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*rate.Limiter
}

func newLimiters(name string, perSecond float64, burst int) *limiters {
	if perSecond <= 0 {
		return nil
	}
	return &limiters{name: name, limit: rate.Limit(perSecond), burst: max(burst, 1), m: map[string]*rate.Limiter{}}
}

func (l *limiters) get(key string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, ok := l.m[key]; ok {
		return lim
	}
	if len(l.m) >= limiterSweepAt {
		// A full bucket behaves exactly like a new one: forgetting it changes nothing.
		for k, lim := range l.m {
			if lim.TokensAt(now) >= float64(l.burst) {
				delete(l.m, k)
			}
		}
	}
	lim := rate.NewLimiter(l.limit, l.burst)
	l.m[key] = lim
	return lim
}

// policy is the bucket as a RateLimit-Policy item: q requests per window of w seconds,
// the window being the time an empty bucket takes to fill.
func (l *limiters) policy() string {
	return fmt.Sprintf(`%q;q=%d;w=%d`, l.name, l.burst, l.window())
}

func (l *limiters) window() int {
	return int(math.Ceil(float64(l.burst) / float64(l.limit)))
}

// state is the bucket as a RateLimit item: r requests left now, t seconds until it is full.
func (l *limiters) state(lim *rate.Limiter, now time.Time) string {
	tokens := max(lim.TokensAt(now), 0)
	full := int(math.Ceil((float64(l.burst) - tokens) / float64(l.limit)))
	return fmt.Sprintf(`%q;r=%d;t=%d`, l.name, int(math.Floor(tokens)), full)
}

// rateLimiter applies the tenant and subject buckets.
type rateLimiter struct {
	tenant, subject *limiters
}

func newRateLimiter(c RateLimit) *rateLimiter {
	rl := &rateLimiter{tenant: newLimiters("tenant", c.TenantRate, c.TenantBurst),
		subject: newLimiters("subject", c.SubjectRate, c.SubjectBurst)}
	if rl.tenant == nil && rl.subject == nil {
		return nil
	}
	return rl
}

// allow takes one token from each bucket of the caller, or none: a refused request costs
// nothing. With tenantToo false it takes only from the subject's bucket: a request the
// caller's role may not make, or a web page, is the subject's own doing and must not spend
// what the tenant's other users share. It sets the RateLimit headers through set either
// way, and Retry-After when refused.
func (rl *rateLimiter) allow(set func(name, value string), tenant, subject string, tenantToo bool) bool {
	now := time.Now()
	type taken struct {
		l   *limiters
		lim *rate.Limiter
		res *rate.Reservation
	}
	var got []taken
	var wait time.Duration
	buckets := []struct {
		l   *limiters
		key string
	}{{rl.subject, tenant + "\x00" + subject}}
	if tenantToo {
		buckets = append(buckets, struct {
			l   *limiters
			key string
		}{rl.tenant, tenant})
	}
	for _, b := range buckets {
		if b.l == nil {
			continue
		}
		lim := b.l.get(b.key, now)
		res := lim.ReserveN(now, 1)
		got = append(got, taken{b.l, lim, res})
		if d := res.DelayFrom(now); d > wait {
			wait = d
		}
	}
	if len(got) == 0 {
		return true
	}
	if wait > 0 {
		for _, t := range got {
			t.res.CancelAt(now)
		}
	}
	var policies, states string
	for i, t := range got {
		if i > 0 {
			policies, states = policies+", ", states+", "
		}
		policies += t.l.policy()
		states += t.l.state(t.lim, now)
	}
	set("RateLimit-Policy", policies)
	set("RateLimit", states)
	if wait > 0 {
		set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return false
	}
	return true
}

// pageLimit charges a web UI page to the signed-in subject's bucket, the one its API
// requests draw from; nil when there is no subject bucket.
func (rl *rateLimiter) pageLimit() func(http.ResponseWriter, *auth.Principal) bool {
	if rl == nil || rl.subject == nil {
		return nil
	}
	return func(w http.ResponseWriter, p *auth.Principal) bool {
		return rl.allow(w.Header().Set, p.Tenant, p.Subject, false)
	}
}

// rateLimitHeaders are the headers documented on every rate-limited response.
func rateLimitHeaders() map[string]*huma.Param {
	return map[string]*huma.Param{
		"RateLimit": {Description: `What is left of each bucket the request drew from (IETF RateLimit header fields): "tenant";r=<requests left>;t=<seconds until full>, then "subject"`,
			Schema: &huma.Schema{Type: huma.TypeString, MaxLength: ptr(200)}},
		"RateLimit-Policy": {Description: `The buckets: "tenant";q=<burst>;w=<seconds an empty bucket takes to fill>, then "subject"`,
			Schema: &huma.Schema{Type: huma.TypeString, MaxLength: ptr(200)}},
	}
}

func ptr[T any](v T) *T { return &v }

// declareRateLimit documents the buckets on every authenticated operation: the RateLimit
// headers on each 2xx and 4xx answer and a 429 with Retry-After.
func declareRateLimit(api huma.API, op *huma.Operation) {
	headers := rateLimitHeaders()
	for code, r := range op.Responses {
		if len(code) == 3 && (code[0] == '2' || code[0] == '4') {
			if r.Headers == nil {
				r.Headers = map[string]*huma.Param{}
			}
			for k, v := range headers {
				r.Headers[k] = v
			}
		}
	}
	h429 := rateLimitHeaders()
	h429["Retry-After"] = &huma.Param{Description: "Seconds until the request would be served",
		Schema: &huma.Schema{Type: huma.TypeInteger, Format: "int32", Minimum: ptr(1.0), Maximum: ptr(86400.0)}}
	declareError(api, op, http.StatusTooManyRequests, h429)
}
