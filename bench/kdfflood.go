package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// tenantKDF is the tenant whose editors flood the key derivation budget.
const tenantKDF = "kdf-flood"

// The flood's keys are encrypted under scrypt at the bound the store accepts: N=2^14 and
// r=15 take 128·r·(N+p+2) = 31.5 MiB of the 32 MiB limit, and p=16, the most allowed,
// makes each derivation as long as any can be (about 2 s of one core).
const (
	kdfFloodN, kdfFloodR, kdfFloodP = 1 << 14, 15, 16
	kdfFloodEditors                 = 16
	kdfFloodPass                    = "bench-kdf-flood-pass"
	kdfRSSCeiling                   = 256 << 20
	kdfListCeiling                  = 100 * time.Millisecond
)

// kdfFloodBody is a validate of a client pair whose key is encrypted at the bound.
func (b *bench) kdfFloodBody() ([]byte, error) {
	p := b.pki.pairs[0]
	block, _ := pem.Decode(p.key)
	if block == nil {
		return nil, errors.New("the bench pair's key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse the bench pair's key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the bench pair's key cannot sign")
	}
	enc, err := materialtest.EncryptScrypt(signer, kdfFloodPass, kdfFloodN, kdfFloodR, kdfFloodP)
	if err != nil {
		return nil, fmt.Errorf("encrypt the flood's key: %w", err)
	}
	return json.Marshal(map[string]string{"name": "flood", "type": "client-pair", "source": "inline",
		"certPem": string(p.cert), "keyPem": string(enc), "keyPassphrase": kdfFloodPass})
}

// scenarioKDFFlood: editors of one tenant post validates whose keys are encrypted at the
// scrypt bound, as fast as they are answered, while a viewer of another tenant lists its
// entries. The server must answer every validate 200 or 503 with Retry-After, keep its
// peak resident memory under 256 MiB, and the other tenant's list p99 under 100 ms.
//
// It runs first and in the first run only, for the reason the largest-workspace scenario
// gives: what the server holds resident after other scenarios would count as its peak.
// The bench server runs with serve's defaults for the budget (64 MiB, one slot per
// processor, a queue of 8) and GOMEMLIMIT.
func (b *bench) scenarioKDFFlood(ctx context.Context) error {
	if b.run > 1 {
		return nil
	}
	body, err := b.kdfFloodBody()
	if err != nil {
		return err
	}
	startRSS, _ := procStatus(b.srv.pid(), "VmRSS")
	note := "peak RSS during the flood"
	if err := os.WriteFile("/proc/"+strconv.Itoa(b.srv.pid())+"/clear_refs", []byte("5"), 0); err != nil {
		note = "peak RSS over the server's lifetime (could not reset the peak)"
	}

	var (
		derived, refused, other atomic.Int64
		firstOther              atomic.Value
		wg                      sync.WaitGroup
		client                  = newClient(kdfFloodEditors)
	)
	defer client.CloseIdleConnections()
	floodCtx, stop := context.WithCancel(ctx)
	for range kdfFloodEditors {
		wg.Go(func() {
			for floodCtx.Err() == nil {
				switch err := b.kdfValidate(floodCtx, client, body); {
				case err == nil:
					derived.Add(1)
				case errors.Is(err, errRefused):
					refused.Add(1)
				case floodCtx.Err() == nil:
					other.Add(1)
					firstOther.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	list := func(_, _ int, rnd *rand.Rand) *http.Request {
		path := "/api/v1/certs?limit=100"
		if i := rnd.IntN(len(b.ids) / 100); i > 0 {
			path += "&cursor=" + url.QueryEscape(encodeCursorID(b.ids[i*100-1]))
		}
		return b.request(http.MethodGet, path, tenantMain+"/viewer", nil)
	}
	res := runLoad(ctx, 2, b.s.Warmup, b.s.Duration, b.httpOp(list, http.StatusOK))
	stop()
	wg.Wait()

	peak, err := procStatus(b.srv.pid(), "VmHWM")
	if err != nil {
		return err
	}
	p99 := res.Hist.Quantile(0.99)
	r := loadRow(fmt.Sprintf("KDF flood: %d editors at the scrypt bound, another tenant lists", kdfFloodEditors), res)
	r.Throughput = 0
	r.Errors += uint64(other.Load())
	r.Target = fmt.Sprintf("peak RSS < %s, list p99 < %s", fmtMiB(kdfRSSCeiling), fmtDur(kdfListCeiling))
	r.Baseline, r.PeakBytes = "peak "+fmtMiB(peak), peak
	r.Status = judge(r.Errors == 0 && res.Ops > 0 && peak < kdfRSSCeiling && p99 < kdfListCeiling)
	r.Note = joinNote(r.Note, fmt.Sprintf("%s %s (%s resident at the start); validates: %d derived (200), %d refused (503 with Retry-After), %d otherwise",
		note, fmtMiB(peak), fmtMiB(startRSS), derived.Load(), refused.Load(), other.Load()))
	if v := firstOther.Load(); v != nil {
		r.Note = joinNote(r.Note, "first unexpected answer: "+v.(string))
	}
	b.add(r)
	return nil
}

// errRefused is a validate the budget refused as it should: 503 with Retry-After.
var errRefused = errors.New("refused by the key derivation budget")

// kdfValidate posts one validate of the flood: nil for a 200, errRefused for a 503 with a
// Retry-After, any other answer an error.
func (b *bench) kdfValidate(ctx context.Context, c *http.Client, body []byte) error {
	resp, err := c.Do(b.request(http.MethodPost, "/api/v1/certs/validate", tenantKDF+"/editor", body).WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Valid   bool   `json:"valid"`
		Message string `json:"message"`
	}
	derr := json.NewDecoder(resp.Body).Decode(&out)
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		return errRefused
	case resp.StatusCode != http.StatusOK:
		return &errStatus{method: http.MethodPost, path: "/api/v1/certs/validate", code: resp.StatusCode, body: out.Message}
	case derr != nil || !out.Valid:
		return fmt.Errorf("validate answered 200 without a valid pair (%v)", derr)
	}
	return nil
}

// encodeCursorID is the list cursor the API hands out after entry id.
func encodeCursorID(id string) string {
	b, _ := json.Marshal(id)
	return base64.RawURLEncoding.EncodeToString(b)
}

// The flood's parameters are within the store's bounds, or this does not compile.
const _ = uint(material.MaxScryptMemory - 128*kdfFloodR*(kdfFloodN+kdfFloodP+2))
