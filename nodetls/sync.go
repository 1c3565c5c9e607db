package nodetls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/durable"
)

// CredentialsPath is the route Sync polls: the caller's tenant's credentials.json.
const CredentialsPath = "/api/v1/credentials"

// DefaultSyncWait is how long one Sync request asks the server to hold it while nothing
// changes (the server caps it at 60 s).
const DefaultSyncWait = 30 * time.Second

// ErrSyncRefused means the server refused the token (401 or 403): Sync stops, since asking
// again cannot help. The token needs the runtime or admin role.
var ErrSyncRefused = errors.New("server refused the credentials request")

// ErrServerBusy means the server asked Sync to come back later (429, such as past its cap
// of waiting long polls, or 503): the next request waits at least its Retry-After.
var ErrServerBusy = errors.New("server asked to retry later")

// maxRetryAfter bounds how long a Retry-After makes Sync wait.
const maxRetryAfter = 5 * time.Minute

// busyError is ErrServerBusy with the wait the server asked for.
type busyError struct {
	host, status string
	after        time.Duration
}

func (e *busyError) Error() string {
	return fmt.Sprintf("sync credentials from %s: %s: %s (retry after %s)", e.host, ErrServerBusy, e.status, e.after)
}

func (e *busyError) Unwrap() error { return ErrServerBusy }

// Sync keeps dir/credentials.json a copy of the caller's tenant's file on the server at
// baseURL ("https://certs.example:8080"), until ctx ends. token is a JWT with the runtime
// role (`loopze-certs token --role runtime`). Each request is a long poll: the server
// answers as soon as the tenant's generation moves, or 304 when the wait ends. The file is
// written atomically (temp file, fsync, rename, fsync of dir), so a Store on it only ever
// sees whole files; a file older than the generation floor a Store keeps beside the copy
// is not written (ErrStaleFile), nor one over MaxFileSize. Network errors and refused
// files are retried with backoff; a refused token returns ErrSyncRefused. A 429 or 503
// (the server's cap of waiting long polls, its rate limit) is retried no sooner than its
// Retry-After. baseURL must be https:// (ErrInsecureURL otherwise; see
// Syncer.AllowLoopbackHTTP). It returns nil when ctx ends.
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
	// AllowLoopbackHTTP permits a plain http:// BaseURL whose host is a loopback address
	// (127.0.0.0/8, ::1) or localhost: a server on the same machine, reached without
	// crossing a network. Any other http:// URL is refused with ErrInsecureURL whatever
	// this says, since the token and the file would cross the network in clear.
	AllowLoopbackHTTP bool

	// have is the generation of the local copy as last written or read; -1 unknown.
	have    int64
	haveSet bool
}

// Path is the local file the Syncer writes.
func (s *Syncer) Path() string { return filepath.Join(s.Dir, credfile.FileName) }

// Run works until ctx ends (nil), the server refuses the token (ErrSyncRefused) or the
// base URL cannot be used (ErrInsecureURL, or not an absolute URL).
func (s *Syncer) Run(ctx context.Context) error {
	if _, err := s.endpoint(); err != nil {
		return err
	}
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
		wait := backoff
		var busy *busyError
		if errors.As(err, &busy) {
			wait = max(wait, busy.after)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
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
	u, err := s.endpoint()
	if err != nil {
		return false, err
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
		// The server's ETag for a file is its generation, quoted: the copy on disk says
		// which it holds, even after a restart.
		req.Header.Set("If-None-Match", `"`+strconv.FormatInt(s.have, 10)+`"`)
	}
	resp, err := s.client().Do(req)
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
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return false, &busyError{host: u.Host, status: resp.Status, after: retryAfter(resp.Header.Get("Retry-After"))}
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
	h, err := credfile.ParseHeader(data)
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

// retryAfter reads a Retry-After of seconds; 0 when there is none or it is not one.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, maxRetryAfter)
}

// localGeneration is the generation of the local copy; -1 when it has no readable header.
func (s *Syncer) localGeneration(ctx context.Context) int64 {
	data, err := readFile(ctx, s.Path(), MaxFileSize)
	if err != nil {
		return -1
	}
	h, err := credfile.ParseHeader(data)
	if err != nil {
		return -1
	}
	return h.Generation
}

// endpoint is the credentials route under BaseURL, refused unless it is https:// (or
// http:// to a loopback host, with AllowLoopbackHTTP).
func (s *Syncer) endpoint() (*url.URL, error) {
	u, err := url.Parse(strings.TrimSuffix(s.BaseURL, "/") + CredentialsPath)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("sync credentials: base URL %q is not an absolute URL", s.BaseURL)
	}
	if err := s.secure(u); err != nil {
		return nil, fmt.Errorf("sync credentials: %w", err)
	}
	return u, nil
}

// secure refuses a URL the token may not be sent to.
func (s *Syncer) secure(u *url.URL) error {
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && s.AllowLoopbackHTTP && loopback(u.Hostname()):
		return nil
	case u.Scheme == "http" && s.AllowLoopbackHTTP:
		return fmt.Errorf("%w: %s is not a loopback host, so plain http:// is refused even with AllowLoopbackHTTP", ErrInsecureURL, u.Host)
	case u.Scheme == "http":
		return fmt.Errorf("%w: plain http:// to %s would send the token and the file in clear (a server on this machine may be reached over http:// with Syncer.AllowLoopbackHTTP)", ErrInsecureURL, u.Host)
	}
	return fmt.Errorf("%w: scheme %q of %s", ErrInsecureURL, u.Scheme, u.Host)
}

// loopback reports whether host is localhost or a loopback address.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// client is Client (or http.DefaultClient) refusing to follow a redirect to a URL the
// token may not be sent to: a server answering an https:// request with a redirect to
// http:// would otherwise receive the request in clear.
func (s *Syncer) client() *http.Client {
	c := *http.DefaultClient
	if s.Client != nil {
		c = *s.Client
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := s.secure(req.URL); err != nil {
			return fmt.Errorf("redirect to %s: %w", req.URL.Redacted(), err)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &c
}
