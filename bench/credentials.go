package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loopze/certstore/internal/credfile"
)

// Sizes of the credentials route's memory scenarios: the attacks a runtime token could
// mount within the rate limits, against a tenant whose file is about 10 MB.
const (
	// edgeEntries client pairs make a credentials.json of about 10.7 MB.
	edgeEntries = 3_800
	slowReaders = 200
	// pollSubjects runtime tokens of pollsPerSubject long polls each: the default cap per
	// subject (LOOPZE_POLL_LIMIT_SUBJECT), 304 polls in all.
	pollSubjects    = 38
	pollsPerSubject = 8
	// credentialsRSSCeiling is the server's memory target while they run.
	credentialsRSSCeiling = 256 << 20
)

// resetPeak makes the server's VmHWM start again from its resident memory now; it says
// what the peak read afterwards covers.
func (b *bench) resetPeak(during string) string {
	before := ""
	if rss, err := procStatus(b.srv.pid(), "VmRSS"); err == nil {
		before = fmtMiB(rss) + " resident before; "
	}
	if err := os.WriteFile("/proc/"+strconv.Itoa(b.srv.pid())+"/clear_refs", []byte("5"), 0); err != nil {
		return before + "peak RSS over the server's lifetime (could not reset the peak)"
	}
	return before + "peak RSS " + during
}

// edgeFile waits until the server has written the edge tenant's file and returns its
// header and size.
func (b *bench) edgeFile(ctx context.Context) (credfile.Header, int64, error) {
	path := credfile.Path(b.srv.dataDir, tenantEdge)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		f, err := os.Open(path)
		if err == nil {
			info, serr := f.Stat()
			h, herr := credfile.ReadHeader(f)
			f.Close()
			if serr == nil && herr == nil {
				return h, info.Size(), nil
			}
			err = cmp.Or(serr, herr)
		}
		if time.Now().After(deadline) {
			return credfile.Header{}, 0, fmt.Errorf("the %s tenant's credentials.json: %w", tenantEdge, err)
		}
		select {
		case <-ctx.Done():
			return credfile.Header{}, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scenarioSlowReaders: slowReaders connections with a runtime token ask for the edge
// tenant's file, read the answer's headers and then nothing more, so every handler is
// stuck in the middle of the body; the server's peak resident memory is the row.
//
// Like the largest workspace, it runs in the first run only, early: what the server holds
// resident after the other scenarios would be counted as its peak.
func (b *bench) scenarioSlowReaders(ctx context.Context) error {
	if b.run > 1 {
		return nil
	}
	_, size, err := b.edgeFile(ctx)
	if err != nil {
		return err
	}
	tok, err := b.srv.token(ctx, tenantEdge, "runtime")
	if err != nil {
		return err
	}
	addr := strings.TrimPrefix(b.srv.base, "http://")
	// A small receive window, so the body cannot all vanish into the kernel's buffers.
	dialer := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return cmp.Or(err, serr)
	}}
	note := b.resetPeak("while the readers stall")
	var (
		conns []net.Conn
		errs  int
		first error
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	t0 := time.Now()
	for range slowReaders {
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err == nil {
			conns = append(conns, conn)
			err = stallAfterHeaders(conn, tok)
		}
		if err != nil {
			errs++
			first = cmpErr(first, err)
		}
	}
	peak, err := procStatus(b.srv.pid(), "VmHWM")
	if err != nil {
		return err
	}
	r := Row{Scenario: fmt.Sprintf("credentials slow readers: %d stalled, %.1f MB file", slowReaders, float64(size)/1e6),
		Ops: uint64(slowReaders - errs), Errors: uint64(errs), Target: "peak RSS < 256 MiB", Baseline: "peak " + fmtMiB(peak),
		PeakBytes: peak, Status: judge(errs == 0 && peak < credentialsRSSCeiling),
		Note: fmt.Sprintf("%s; %d requests sent and stalled in %s; a copy of the file each would be %s", note, slowReaders,
			time.Since(t0).Round(time.Millisecond), fmtMiB(int64(slowReaders)*size))}
	if first != nil {
		r.Note = joinNote(r.Note, "first error: "+first.Error())
	}
	b.add(r)
	return nil
}

// stallAfterHeaders asks for the credentials file on conn and reads until the answer's
// headers have come: the server is writing the body then. It reads nothing more.
func stallAfterHeaders(conn net.Conn, token string) error {
	if _, err := fmt.Fprintf(conn, "GET /api/v1/credentials HTTP/1.1\r\nHost: loopze\r\nAuthorization: Bearer %s\r\n\r\n", token); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	var head []byte
	buf := make([]byte, 256)
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("read the answer's headers: %w", err)
		}
		head = append(head, buf[:n]...)
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) {
		line, _, _ := bytes.Cut(head, []byte("\r\n"))
		return fmt.Errorf("answered %s", line)
	}
	return nil
}

// scenarioLongPolls: pollSubjects x pollsPerSubject long polls (wait=60s) of the edge
// tenant's current generation, all waiting, are woken by one write and each read the new
// ~10 MB file; the server's peak resident memory is the row. It runs in the first run
// only, for the reason scenarioSlowReaders gives.
func (b *bench) scenarioLongPolls(ctx context.Context) error {
	if b.run > 1 {
		return nil
	}
	h, size, err := b.edgeFile(ctx)
	if err != nil {
		return err
	}
	tokens := make([]string, pollSubjects)
	for i := range tokens {
		out, err := b.srv.run(ctx, "token", "--tenant", tenantEdge, "--role", "runtime", "--sub", fmt.Sprintf("edge-device-%02d", i), "--ttl", "1h")
		if err != nil {
			return err
		}
		tokens[i] = strings.TrimSpace(out)
	}
	etag := `"` + strconv.FormatInt(h.Generation, 10) + `"`
	polls := pollSubjects * pollsPerSubject
	client := newClient(polls)
	client.Timeout = 3 * time.Minute
	defer client.CloseIdleConnections()
	get := func(ctx context.Context, tok, wait string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.srv.base+"/api/v1/credentials?wait="+wait, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("If-None-Match", etag)
		return client.Do(req)
	}
	note := b.resetPeak("while the polls wait, wake and read")
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  int
		first error
		read  int64
	)
	for _, tok := range tokens {
		for range pollsPerSubject {
			wg.Go(func() {
				n, err := pollOnce(pollCtx, get, tok)
				mu.Lock()
				defer mu.Unlock()
				read += n
				if err != nil {
					errs++
					first = cmpErr(first, err)
				}
			})
		}
	}
	// Every poll waits once a poll more of each subject is refused with 429: the cap of
	// the subject is full of waiting polls.
	if err := b.untilRefused(ctx, get, tokens); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	t0 := time.Now()
	if err := do(ctx, b.client, b.request(http.MethodPost, "/api/v1/certs", tenantEdge+"/editor", b.postBody(fmt.Sprintf("wake-r%d", b.run), 0)), http.StatusCreated); err != nil {
		cancel()
		wg.Wait()
		return fmt.Errorf("the write that wakes the polls: %w", err)
	}
	wg.Wait()
	elapsed := time.Since(t0)
	peak, err := procStatus(b.srv.pid(), "VmHWM")
	if err != nil {
		return err
	}
	r := Row{Scenario: fmt.Sprintf("credentials long polls: %d woken by one write, %.1f MB file", polls, float64(size)/1e6),
		Ops: uint64(polls - errs), Errors: uint64(errs), Target: "peak RSS < 256 MiB", Baseline: "peak " + fmtMiB(peak),
		PeakBytes: peak, Status: judge(errs == 0 && peak < credentialsRSSCeiling),
		Note: fmt.Sprintf("%s; %d subjects of %d polls; all answered with %s in %s after the write", note, pollSubjects, pollsPerSubject,
			fmtMiB(read), elapsed.Round(time.Millisecond))}
	if first != nil {
		r.Note = joinNote(r.Note, "first error: "+first.Error())
	}
	b.add(r)
	return nil
}

// pollOnce holds one long poll until it is answered 200 and reads the file; a 429 (the
// subject's cap, held for a moment by untilRefused's probe) is asked again.
func pollOnce(ctx context.Context, get func(context.Context, string, string) (*http.Response, error), tok string) (int64, error) {
	for {
		resp, err := get(ctx, tok, "60s")
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return n, err
		case resp.StatusCode == http.StatusOK:
			return n, nil
		case resp.StatusCode != http.StatusTooManyRequests:
			return n, fmt.Errorf("long poll answered %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// untilRefused asks, for each subject, one poll more than its cap until the server
// refuses it: then all of that subject's polls are waiting.
func (b *bench) untilRefused(ctx context.Context, get func(context.Context, string, string) (*http.Response, error), tokens []string) error {
	deadline := time.Now().Add(time.Minute)
	for _, tok := range tokens {
		for {
			resp, err := get(ctx, tok, "1ms")
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests {
				break
			}
			if resp.StatusCode != http.StatusNotModified {
				return fmt.Errorf("probe answered %s", resp.Status)
			}
			if time.Now().After(deadline) {
				return errors.New("the long polls were not all waiting within a minute")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}
