package nodetls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/fileexport"
)

// CredentialsPath is the route Sync polls: the caller's tenant's credentials.json.
const CredentialsPath = "/api/v1/credentials"

// DefaultSyncWait is how long one Sync request asks the server to hold it while nothing
// changes (the server caps it at 60 s).
const DefaultSyncWait = 30 * time.Second

// ErrSyncRefused means the server refused the token (401 or 403): Sync stops, since asking
// again cannot help. The token needs the runtime or admin role.
var ErrSyncRefused = errors.New("server refused the credentials request")

// Sync keeps dir/credentials.json a copy of the caller's tenant's file on the server at
// baseURL ("https://certs.example:8080"), until ctx ends. token is a JWT with the runtime
// role (`loopze-certs token --role runtime`). Each request is a long poll: the server
// answers as soon as the tenant's generation moves, or 304 when the wait ends. The file is
// written atomically (temp file, fsync, rename, fsync of dir), so a Store on it only ever
// sees whole files; a file older than the generation floor a Store keeps beside the copy
// is not written (ErrStaleFile), nor one over MaxFileSize. Network errors and refused
// files are retried with backoff; a refused token returns ErrSyncRefused. It returns nil
// when ctx ends.
func Sync(ctx context.Context, baseURL, token, dir string) error {
	return (&Syncer{BaseURL: baseURL, Token: token, Dir: dir}).Run(ctx)
}

// Syncer is Sync with its knobs. One Syncer serves one Run at a time.
type Syncer struct {
	// BaseURL is the server's address, without the /api/v1 path.
	BaseURL string
	// Token is the bearer token (runtime or admin role). It is never logged or returned.
	Token string
	// Dir is where credentials.json is kept.
	Dir string
	// Client makes the requests; nil means a client with no overall timeout (each request
	// is bounded by Wait plus a margin).
	Client *http.Client
	// Wait is the long-poll wait asked for; zero means DefaultSyncWait.
	Wait time.Duration
	// OnWrite, when set, is called after each new file is in place.
	OnWrite func(generation int64)
	// OnError, when set, is called with each failed attempt before it is retried.
	OnError func(error)

	// have is the generation of the local copy as last written or read; -1 unknown.
	have    int64
	haveSet bool
}

// Path is the local file the Syncer writes.
func (s *Syncer) Path() string { return filepath.Join(s.Dir, fileexport.FileName) }

// Run works until ctx ends (nil) or the server refuses the token (ErrSyncRefused).
func (s *Syncer) Run(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		_, err := s.Once(ctx)
		if err == nil {
			backoff = 500 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrSyncRefused) {
			return err
		}
		if s.OnError != nil {
			s.OnError(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil
}

// Once makes one request: it waits up to Wait for a generation other than the local
// file's and writes it when one comes. written says whether the file was replaced.
func (s *Syncer) Once(ctx context.Context) (written bool, err error) {
	wait := s.Wait
	if wait <= 0 {
		wait = DefaultSyncWait
	}
	u, err := url.Parse(strings.TrimSuffix(s.BaseURL, "/") + CredentialsPath)
	if err != nil || u.Host == "" {
		return false, fmt.Errorf("sync credentials: base URL %q is not an absolute URL", s.BaseURL)
	}
	u.RawQuery = url.Values{"wait": {wait.String()}}.Encode()
	reqCtx, cancel := context.WithTimeout(ctx, wait+15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, fmt.Errorf("sync credentials: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	if !s.haveSet {
		// The copy left by an earlier run; afterwards the Syncer knows what it wrote, and
		// does not parse a file of megabytes before every request.
		s.have, s.haveSet = s.localGeneration(ctx), true
	}
	if s.have >= 0 {
		req.Header.Set("If-None-Match", ETag(s.have))
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("sync credentials from %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return false, nil
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return false, fmt.Errorf("sync credentials from %s: %w: %s (the token needs the runtime or admin role)", u.Host, ErrSyncRefused, resp.Status)
	default:
		return false, fmt.Errorf("sync credentials from %s: %s", u.Host, resp.Status)
	}
	if resp.ContentLength > MaxFileSize {
		return false, fmt.Errorf("sync credentials from %s: %w", u.Host, tooLarge(MaxFileSize))
	}
	var buf bytes.Buffer
	if n := resp.ContentLength; n > 0 {
		buf.Grow(int(n) + bytes.MinRead) // one buffer, not a chain of ever larger ones
	}
	_, err = buf.ReadFrom(io.LimitReader(resp.Body, MaxFileSize+1))
	data := buf.Bytes()
	if err != nil {
		return false, fmt.Errorf("sync credentials from %s: read body: %w", u.Host, err)
	}
	if len(data) > MaxFileSize {
		return false, fmt.Errorf("sync credentials from %s: %w", u.Host, tooLarge(MaxFileSize))
	}
	h, err := fileexport.ParseHeader(data)
	if err != nil {
		return false, fmt.Errorf("sync credentials from %s: %w: %w", u.Host, ErrNotCredentialsFile, err)
	}
	if err := checkFloor(ctx, s.Path(), h.Tenant, h.Generation); err != nil {
		return false, fmt.Errorf("sync credentials from %s: not written: %w", u.Host, err)
	}
	if err := durable.Replace(s.Path(), data, durable.Mode(0o600), durable.DirMode(0o700)); err != nil {
		s.haveSet = false
		return false, fmt.Errorf("sync credentials: %w", err)
	}
	s.have = h.Generation
	if s.OnWrite != nil {
		s.OnWrite(h.Generation)
	}
	return true, nil
}

// localGeneration is the generation of the local copy; -1 when it has no readable header.
func (s *Syncer) localGeneration(ctx context.Context) int64 {
	data, err := readFile(ctx, s.Path(), MaxFileSize)
	if err != nil {
		return -1
	}
	h, err := fileexport.ParseHeader(data)
	if err != nil {
		return -1
	}
	return h.Generation
}

// ETag is the entity tag the credentials route gives a file of generation gen.
func ETag(gen int64) string { return `"` + strconv.FormatInt(gen, 10) + `"` }
