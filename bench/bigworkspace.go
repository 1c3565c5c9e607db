package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/loopze/certstore/internal/refs"
)

// bigWorkspaceRSSCeiling is the memory target of the server while readers fetch the largest
// workspace it accepts.
const bigWorkspaceRSSCeiling = 256 << 20

// bigWorkspaceReaders is how many readers fetch it at once.
const bigWorkspaceReaders = 4

// largestWorkspace is a document just under refs.MaxBytes that is nearly all JSON values:
// one node holding an array of zeros, the shape that costs the most memory per byte sent.
func largestWorkspace() []byte {
	head := []byte(`{"flows":[{"id":"big","nodes":[{"id":"big-1","type":"function","data":[0`)
	tail := []byte(`]}]}]}`)
	n := (refs.MaxBytes - 2 - len(head) - len(tail)) / 2 // the body limit takes less than MaxBytes itself
	var b bytes.Buffer
	b.Grow(refs.MaxBytes)
	b.Write(head)
	for range n {
		b.WriteString(",0")
	}
	b.Write(tail)
	return b.Bytes()
}

// scenarioBigWorkspace: deploy the largest accepted workspace, then have several viewers
// read it at once, and report the server's peak resident memory while they do.
//
// It runs in the first run only and before everything but the KDF flood (which has the
// same need): what the server holds resident after the other scenarios (Go returns freed
// memory to the kernel lazily) would be counted as this scenario's peak.
func (b *bench) scenarioBigWorkspace(ctx context.Context) error {
	if b.run > 1 {
		return nil
	}
	doc := largestWorkspace()
	name := fmt.Sprintf("GET /flows, %.0f MiB workspace, %d readers", float64(len(doc))/(1<<20), bigWorkspaceReaders)
	t0 := time.Now()
	if err := do(ctx, b.client, b.request(http.MethodPut, "/api/v1/flows", tenantDeploy+"/editor", doc), http.StatusOK); err != nil {
		return fmt.Errorf("deploy the largest workspace: %w", err)
	}
	deployed := time.Since(t0)
	note := "peak RSS during the reads"
	if err := os.WriteFile("/proc/"+strconv.Itoa(b.srv.pid())+"/clear_refs", []byte("5"), 0); err != nil {
		note = "peak RSS over the server's lifetime (could not reset the peak)"
	}
	rounds := 3
	if b.s.Quick {
		rounds = 1
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   int
		first  error
		reads  int
		t1     = time.Now()
		client = newClient(bigWorkspaceReaders)
	)
	defer client.CloseIdleConnections()
	for range bigWorkspaceReaders {
		wg.Go(func() {
			for range rounds {
				err := do(ctx, client, b.request(http.MethodGet, "/api/v1/flows", tenantDeploy+"/editor", nil), http.StatusOK)
				mu.Lock()
				reads++
				if err != nil {
					errs++
					first = cmpErr(first, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t1)
	peak, err := procStatus(b.srv.pid(), "VmHWM")
	if err != nil {
		return err
	}
	r := Row{Scenario: name, Ops: uint64(reads - errs), Errors: uint64(errs), Target: "peak RSS < 256 MiB",
		Baseline: "peak " + fmtMiB(peak), PeakBytes: peak, Status: judge(errs == 0 && peak < bigWorkspaceRSSCeiling),
		Note: fmt.Sprintf("%s; %d reads in %s; deploy took %s", note, reads, elapsed.Round(time.Millisecond), deployed.Round(time.Millisecond))}
	if first != nil {
		r.Note = joinNote(r.Note, "first error: "+first.Error())
	}
	b.add(r)
	// Leave the tenant's workspace small again for whatever runs next.
	return do(ctx, b.client, b.request(http.MethodPut, "/api/v1/flows", tenantDeploy+"/editor", []byte(`{"flows":[]}`)), http.StatusOK)
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
