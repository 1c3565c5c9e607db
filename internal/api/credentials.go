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
	"github.com/loopze/certstore/internal/fileexport"
)

const credentialsPath = "/api/v1/credentials"

// MaxCredentialsWait caps the long poll of GET /api/v1/credentials: longer than any proxy
// idle timeout a runtime is likely to sit behind is no use, and each waiting request holds
// a goroutine.
const MaxCredentialsWait = 60 * time.Second

// Credentials serves each tenant's credentials.json, as the export job writes it, to the
// runtimes that sync it. The export job calls Written after every file it writes, which
// wakes the long polls of that tenant: nothing polls the database or the disk in a loop.
type Credentials struct {
	// DataDir is where the export job writes the files (see fileexport.Path).
	DataDir string

	mu      sync.Mutex
	changed map[string]chan struct{} // closed and replaced at every write of the tenant
	headers map[string]seenHeader    // generation of each file as last parsed
}

// seenHeader is a file's generation with the stat that identified it: a tenant's file is
// megabytes of JSON, parsed again only when it changed.
type seenHeader struct {
	info fs.FileInfo
	gen  int64
}

// Written is the export job's OnWrite hook: it wakes every request waiting on the tenant.
func (c *Credentials) Written(r fileexport.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.changed[r.Tenant]; ok {
		close(ch)
		delete(c.changed, r.Tenant)
	}
}

// wake returns a channel closed at the tenant's next write.
func (c *Credentials) wake(tenant string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = map[string]chan struct{}{}
	}
	ch, ok := c.changed[tenant]
	if !ok {
		ch = make(chan struct{})
		c.changed[tenant] = ch
	}
	return ch
}

// read returns the tenant's file and its generation.
func (c *Credentials) read(tenant string) ([]byte, int64, error) {
	f, err := os.Open(fileexport.Path(c.DataDir, tenant))
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	// Files are replaced, never written in place, so the open file keeps its size: one
	// buffer of that size, not the chain of ever larger ones io.ReadAll leaves behind (five
	// times a large tenant's file in garbage per request).
	data := make([]byte, info.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, 0, err
	}
	c.mu.Lock()
	seen, ok := c.headers[tenant]
	c.mu.Unlock()
	if ok && os.SameFile(seen.info, info) && seen.info.Size() == info.Size() && seen.info.ModTime().Equal(info.ModTime()) {
		return data, seen.gen, nil
	}
	h, err := fileexport.ParseHeader(data)
	if err != nil {
		return nil, 0, err
	}
	c.mu.Lock()
	if c.headers == nil {
		c.headers = map[string]seenHeader{}
	}
	c.headers[tenant] = seenHeader{info: info, gen: h.Generation}
	c.mu.Unlock()
	return data, h.Generation, nil
}

// CredentialsInput asks for the tenant's file, optionally only once it changed.
type CredentialsInput struct {
	IfNoneMatch string `header:"If-None-Match" maxLength:"256" doc:"The ETag of the copy the runtime holds: 304 while the file is still that generation"`
	Wait        string `query:"wait" maxLength:"32" doc:"With If-None-Match: hold the request until the generation moves or this long has passed (a Go duration such as 30s, at most 60s), then answer 200 or 304" example:"30s"`
}

// CredentialsOutput is the file as on disk: ciphertext only.
type CredentialsOutput struct {
	Status       int
	ETag         string `header:"ETag" doc:"The file's generation, quoted"`
	ContentType  string `header:"Content-Type"`
	CacheControl string `header:"Cache-Control"`
	Body         []byte
}

func registerCredentials(api huma.API, s *Server) {
	op := secured(huma.Operation{
		OperationID: "getCredentials", Method: http.MethodGet, Path: credentialsPath, Tags: []string{"runtime"},
		Summary: "The tenant's encrypted credentials.json, for runtimes",
		Description: "Returns the caller's tenant's credentials.json exactly as the export job wrote it: " +
			"a small clear header and the AES-256-GCM ciphertext, which only the master key opens. " +
			"ETag is the generation; If-None-Match with it answers 304 while it is current, and with " +
			"`wait` the request is held until the export job writes a new generation (a long poll, at most 60 s). " +
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
		tenant := principalFrom(ctx).Tenant
		var timeout <-chan time.Time
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		for {
			woken := c.wake(tenant) // before the read, so a write in between is not missed
			data, gen, err := c.read(tenant)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return nil, newError(http.StatusNotFound, "no credentials.json has been exported for tenant "+tenant+" yet")
			case err != nil:
				return nil, s.mapError(ctx, fmt.Errorf("read credentials file of %s: %w", tenant, err))
			}
			etag := strconv.Quote(strconv.FormatInt(gen, 10))
			if !etagMatches(in.IfNoneMatch, etag) {
				return &CredentialsOutput{Status: http.StatusOK, ETag: etag, ContentType: "application/json",
					CacheControl: "no-store", Body: data}, nil
			}
			if timeout == nil {
				return &CredentialsOutput{Status: http.StatusNotModified, ETag: etag, CacheControl: "no-store"}, nil
			}
			select {
			case <-woken:
			case <-timeout:
				timeout = nil // one more read, then 304
			case <-ctx.Done():
				// The client went away (or the server stops): nobody reads this answer.
				return &CredentialsOutput{Status: http.StatusNotModified, ETag: etag, CacheControl: "no-store"}, nil
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

// etagMatches reports whether an If-None-Match header names etag (or is *).
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}
