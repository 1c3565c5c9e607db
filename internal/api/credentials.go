package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/fileexport"
)

const credentialsPath = "/api/v1/credentials"

// MaxCredentialsWait caps the long poll of GET /api/v1/credentials: longer than any proxy
// idle timeout a runtime is likely to sit behind is no use, and each waiting request holds
// a goroutine.
const MaxCredentialsWait = 60 * time.Second

// PollRetryAfter is the Retry-After of a long poll refused by a poll cap: places free as
// waiting polls end, at the latest MaxCredentialsWait after they began.
const PollRetryAfter = 5 * time.Second

// copyBufferSize is the buffer a response copies the file through. A reader that stops
// reading holds it until the write deadline: small, so many stalled readers cost little.
const copyBufferSize = 8 << 10

// Credentials serves each tenant's credentials.json, as the export job writes it, to the
// runtimes that sync it. The export job calls Written after every file it writes, which
// wakes the long polls of that tenant: nothing polls the database or the disk in a loop.
//
// A file is served from an open descriptor, never read whole into memory: the export job
// replaces files by rename, so an open file is a consistent snapshot however long a slow
// reader takes. Requests that find the same file share one descriptor and one read of its
// header, so long polls woken by one write cost one open between them.
type Credentials struct {
	// DataDir is where the export job writes the files (see credfile.Path).
	DataDir string
	// MaxPollsPerTenant and MaxPollsPerSubject cap the long polls waiting at once: of one
	// tenant, and of one token subject within it. Past either, a poll is answered 429 with
	// Retry-After. Zero leaves that cap off.
	MaxPollsPerTenant, MaxPollsPerSubject int
	// OnRead, when set, is called each time a tenant's file is opened and its header read.
	OnRead func(tenant string)

	mu      sync.Mutex
	tenants map[string]*tenantFile
}

// tenantFile is what the route keeps of one tenant. Its fields but open are guarded by
// Credentials.mu.
type tenantFile struct {
	open     sync.Mutex    // one open of the tenant's file at a time, which the others then share
	changed  chan struct{} // closed and replaced at every write of the tenant
	cur      *snapshot     // the file as last opened; nil when no request holds it
	polls    int           // long polls admitted and not answered yet
	subjects map[string]int
}

// snapshot is one open file of a tenant and its generation. It is closed once no request
// holds it and either a newer file replaced it or no poll of the tenant is waiting (a woken
// poll about to read it).
type snapshot struct {
	f     *os.File
	info  fs.FileInfo
	gen   int64
	refs  int
	stale bool
}

// Written is the export job's OnWrite hook: it wakes every request waiting on the tenant.
func (c *Credentials) Written(r fileexport.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tf := c.tenants[r.Tenant]; tf != nil && tf.changed != nil {
		close(tf.changed)
		tf.changed = nil
	}
}

// Waiting returns how many long polls of tenant have been admitted and not answered yet.
func (c *Credentials) Waiting(tenant string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tf := c.tenants[tenant]; tf != nil {
		return tf.polls
	}
	return 0
}

// tenant returns the tenant's state; c.mu is held.
func (c *Credentials) tenant(tenant string) *tenantFile {
	if c.tenants == nil {
		c.tenants = map[string]*tenantFile{}
	}
	tf, ok := c.tenants[tenant]
	if !ok {
		tf = &tenantFile{subjects: map[string]int{}}
		c.tenants[tenant] = tf
	}
	return tf
}

// wake returns a channel closed at the tenant's next write.
func (c *Credentials) wake(tenant string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	tf := c.tenant(tenant)
	if tf.changed == nil {
		tf.changed = make(chan struct{})
	}
	return tf.changed
}

// acquire returns the tenant's file as it is on disk now, open, for the caller to release.
func (c *Credentials) acquire(tenant string) (*snapshot, error) {
	c.mu.Lock()
	tf := c.tenant(tenant)
	c.mu.Unlock()
	tf.open.Lock()
	defer tf.open.Unlock()
	path := credfile.Path(c.DataDir, tenant)
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if s := tf.cur; s != nil && sameFile(s.info, info) {
		s.refs++
		c.mu.Unlock()
		return s, nil
	}
	c.mu.Unlock()
	s, err := openSnapshot(path)
	if err != nil {
		return nil, err
	}
	if c.OnRead != nil {
		c.OnRead(tenant)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := tf.cur; old != nil {
		old.stale = true
		c.closeIdle(tf, old)
	}
	s.refs = 1
	tf.cur = s
	return s, nil
}

// openSnapshot opens a file and reads its header, and nothing more of it.
func openSnapshot(path string) (*snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err == nil {
		var h credfile.Header
		if h, err = credfile.ReadHeader(io.NewSectionReader(f, 0, info.Size())); err == nil {
			return &snapshot{f: f, info: info, gen: h.Generation}, nil
		}
	}
	_ = f.Close()
	return nil, err
}

// sameFile reports whether a stat of the path still names the file a snapshot holds. The
// snapshot keeps its file open, so no new file can have been given its inode.
func sameFile(held, now fs.FileInfo) bool {
	return os.SameFile(held, now) && held.Size() == now.Size() && held.ModTime().Equal(now.ModTime())
}

// release gives back a snapshot acquire returned.
func (c *Credentials) release(tenant string, s *snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.refs--
	c.closeIdle(c.tenant(tenant), s)
}

// closeIdle closes s when nobody holds it and nobody will: it was replaced, or no poll of
// the tenant is waiting to read it. c.mu is held.
func (c *Credentials) closeIdle(tf *tenantFile, s *snapshot) {
	if s.refs > 0 || (!s.stale && tf.polls > 0) {
		return
	}
	_ = s.f.Close()
	if tf.cur == s {
		tf.cur = nil
	}
}

// enter admits a long poll of subject, or says which cap refuses it.
func (c *Credentials) enter(tenant, subject string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	tf := c.tenant(tenant)
	if c.MaxPollsPerSubject > 0 && tf.subjects[subject] >= c.MaxPollsPerSubject {
		return pollsRefused(fmt.Sprintf("this token subject has %d long polls waiting already, the most allowed", tf.subjects[subject]))
	}
	if c.MaxPollsPerTenant > 0 && tf.polls >= c.MaxPollsPerTenant {
		return pollsRefused(fmt.Sprintf("this tenant has %d long polls waiting already, the most allowed", tf.polls))
	}
	tf.polls++
	tf.subjects[subject]++
	return nil
}

// leave ends a long poll enter admitted.
func (c *Credentials) leave(tenant, subject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tf := c.tenant(tenant)
	tf.polls--
	if tf.subjects[subject]--; tf.subjects[subject] <= 0 {
		delete(tf.subjects, subject)
	}
	if tf.cur != nil {
		c.closeIdle(tf, tf.cur)
	}
}

// pollsRefused is the 429 of a poll cap.
func pollsRefused(why string) error {
	return huma.ErrorWithHeaders(
		newError(http.StatusTooManyRequests, why+"; retry after the seconds in Retry-After (or ask without wait)"),
		http.Header{"Retry-After": {strconv.Itoa(int(PollRetryAfter / time.Second))}})
}

// CredentialsInput asks for the tenant's file, optionally only once it changed.
type CredentialsInput struct {
	IfNoneMatch string `header:"If-None-Match" maxLength:"256" doc:"The ETag of the copy the runtime holds: 304 while the file is still that generation"`
	Wait        string `query:"wait" maxLength:"32" doc:"With If-None-Match: hold the request until the generation moves or this long has passed (a Go duration such as 30s, at most 60s), then answer 200 or 304" example:"30s"`
}

// CredentialsOutput is the file as on disk: ciphertext only. Body writes the status and
// streams the file.
type CredentialsOutput struct {
	ETag         string `header:"ETag" doc:"The file's generation, quoted"`
	ContentType  string `header:"Content-Type"`
	CacheControl string `header:"Cache-Control"`
	Body         func(huma.Context)
}

// credentialsNotModified is the answer while the caller's copy is current.
func credentialsNotModified(tag string) *CredentialsOutput {
	return &CredentialsOutput{ETag: tag, CacheControl: "no-store", Body: func(ctx huma.Context) {
		ctx.SetStatus(http.StatusNotModified)
	}}
}

// fileOutput streams the snapshot and releases it once written, or once the client has
// gone; a reader that stops reading holds one small buffer, not the file.
func (c *Credentials) fileOutput(tenant, tag string, s *snapshot) *CredentialsOutput {
	return &CredentialsOutput{ETag: tag, ContentType: "application/json", CacheControl: "no-store", Body: func(ctx huma.Context) {
		defer c.release(tenant, s)
		ctx.SetHeader("Content-Length", strconv.FormatInt(s.info.Size(), 10))
		ctx.SetStatus(http.StatusOK)
		// An error here is the client going away or the write deadline: the answer is cut
		// short, which Content-Length tells the client.
		_, _ = io.CopyBuffer(ctx.BodyWriter(), io.NewSectionReader(s.f, 0, s.info.Size()), make([]byte, copyBufferSize))
	}}
}

func registerCredentials(api huma.API, s *Server) {
	op := secured(huma.Operation{
		OperationID: "getCredentials", Method: http.MethodGet, Path: credentialsPath, Tags: []string{"runtime"},
		Summary: "The tenant's encrypted credentials.json, for runtimes",
		Description: "Returns the caller's tenant's credentials.json exactly as the export job wrote it: " +
			"a small clear header and the AES-256-GCM ciphertext, which only the master key opens. " +
			"ETag is the generation; If-None-Match with it answers 304 while it is current, and with " +
			"`wait` the request is held until the export job writes a new generation (a long poll, at most 60 s). " +
			"The long polls waiting at once are capped per tenant and per token subject (LOOPZE_POLL_LIMIT_TENANT, LOOPZE_POLL_LIMIT_SUBJECT): " +
			"past either, a request that would wait is answered 429 with Retry-After; one that would not wait is always served. " +
			"404 until the tenant's first export.",
		Errors: []int{http.StatusNotFound, http.StatusUnprocessableEntity},
		Responses: map[string]*huma.Response{
			"200": {Description: "The file", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{
				Type: "object", Description: "credentials.json: format, version, tenant, generation, keyId, cipher and the base64 ciphertext (docs/credentials-format.md)",
				AdditionalProperties: true}}}},
			"304": {Description: "The file is still the generation named in If-None-Match"},
		},
	}, auth.Runtime)
	// A long poll outlives the server's write timeout: this operation moves its deadline.
	op.Middlewares = huma.Middlewares{func(ctx huma.Context, next func(huma.Context)) {
		if _, w := humago.Unwrap(ctx); w != nil {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(MaxCredentialsWait + 15*time.Second))
		}
		next(ctx)
	}}
	op.Description = strings.Replace(op.Description, "Requires the **runtime** role or higher.",
		"Requires the **runtime** role (tokens from `loopze-certs token --role runtime`, which allow nothing else) or **admin**.", 1)
	huma.Register(api, op, func(ctx context.Context, in *CredentialsInput) (*CredentialsOutput, error) {
		c := s.deps.Credentials
		if c == nil {
			return nil, newError(http.StatusServiceUnavailable, "credentials files are not served by this process")
		}
		wait, err := parseWait(in.Wait)
		if err != nil {
			return nil, err
		}
		p := principalFrom(ctx)
		tenant := p.Tenant
		var timeout <-chan time.Time
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		polling := false
		defer func() {
			if polling {
				c.leave(tenant, p.Subject)
			}
		}()
		for {
			woken := c.wake(tenant) // before the read, so a write in between is not missed
			snap, err := c.acquire(tenant)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return nil, newError(http.StatusNotFound, "no credentials.json has been exported for tenant "+tenant+" yet")
			case err != nil:
				return nil, s.mapError(ctx, fmt.Errorf("read credentials file of %s: %w", tenant, err))
			}
			tag := etag(snap.gen)
			if !noneMatchNames(in.IfNoneMatch, tag) {
				return c.fileOutput(tenant, tag, snap), nil
			}
			c.release(tenant, snap)
			if timeout == nil {
				return credentialsNotModified(tag), nil
			}
			if !polling {
				// Only a request that is about to wait is a poll: one that is answered at
				// once costs no more than any other read.
				if err := c.enter(tenant, p.Subject); err != nil {
					return nil, err
				}
				polling = true
			}
			select {
			case <-woken:
			case <-timeout:
				timeout = nil // one more read, then 304
			case <-ctx.Done():
				// The client went away (or the server stops): nobody reads this answer.
				return credentialsNotModified(tag), nil
			}
		}
	})
}

// parseWait reads ?wait=; empty means no wait.
func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > MaxCredentialsWait {
		return 0, newError(http.StatusUnprocessableEntity, "validation failed",
			&ErrorDetail{Location: "query.wait", Message: "must be a duration from 0s to 60s, such as 30s"})
	}
	return d, nil
}
