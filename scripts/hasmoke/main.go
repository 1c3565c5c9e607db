// Command hasmoke is the load and the judge of scripts/ha-smoke: a bounded writer that
// creates entries through the load balancer and logs every answer, a check that compares
// what was acknowledged with what the store holds after a failover, and a wait for every
// replica's credentials.json to reach one generation. It sends traffic only to the URL it
// is given (a loopback address in the smoke test) and stops by itself.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loopze/certstore/internal/credfile"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hasmoke write|check|paths|converge [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "write":
		err = write(ctx, os.Args[2:])
	case "check":
		err = check(ctx, os.Args[2:])
	case "converge":
		err = converge(ctx, os.Args[2:])
	case "paths":
		err = paths(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hasmoke:", err)
		os.Exit(1)
	}
}

// write creates entries prefix-W-N from workers goroutines until duration has passed or
// max entries are acknowledged. An entry is retried (same ID) until it gets a definite
// answer: 201, or 409 when an earlier attempt was committed but its answer lost. Every
// attempt is a log line "sent_unix_ms answered_unix_ms status id" (status 0: no HTTP answer).
func write(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	base := fs.String("url", "", "base URL of the load balancer")
	token := fs.String("token", "", "bearer token")
	duration := fs.Duration("duration", 40*time.Second, "how long to write")
	maxN := fs.Int("max", 5000, "at most this many entries")
	workers := fs.Int("workers", 2, "concurrent writers")
	pause := fs.Duration("pause", 20*time.Millisecond, "pause between two writes of a worker")
	logPath := fs.String("log", "", "attempt log")
	prefix := fs.String("prefix", "ha", "entry ID prefix")
	_ = fs.Parse(args)
	certPEM, err := selfSigned()
	if err != nil {
		return err
	}
	out, err := os.Create(*logPath)
	if err != nil {
		return err
	}
	defer out.Close()
	var (
		mu    sync.Mutex
		w     = bufio.NewWriter(out)
		count int
	)
	logLine := func(sent time.Time, status int, id string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%d %d %d %s\n", sent.UnixMilli(), time.Now().UnixMilli(), status, id)
	}
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if count >= *maxN {
			return false
		}
		count++
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for wk := range *workers {
		wg.Go(func() {
			for n := 1; ctx.Err() == nil && take(); n++ {
				id := fmt.Sprintf("%s-%d-%05d", *prefix, wk, n)
				body, _ := json.Marshal(map[string]string{
					"id": id, "name": "HA smoke " + id, "type": "ca-bundle", "source": "inline", "certPem": certPEM,
				})
				for ctx.Err() == nil {
					sent := time.Now()
					status := post(ctx, client, *base+"/api/v1/certs", *token, body)
					logLine(sent, status, id)
					if status == http.StatusCreated || status == http.StatusConflict || (status >= 400 && status < 500) {
						break
					}
					sleep(ctx, 100*time.Millisecond) // 503 or no answer: retry the same ID
				}
				sleep(ctx, *pause)
			}
		})
	}
	wg.Wait()
	return w.Flush()
}

func post(ctx context.Context, c *http.Client, u, token string, body []byte) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func selfSigned() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "HA smoke CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

type attempt struct {
	sent, at int64 // when the request went out and when its answer came
	status   int
	id       string
}

// check reads the attempt log and the events file ("name unix_ms" lines), lists what the
// store holds, and prints the figures; it fails when an acknowledged write is missing, when
// a 5xx other than 503 was answered, or when no write succeeded after the primary's kill.
func check(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	base := fs.String("url", "", "base URL of the load balancer")
	token := fs.String("token", "", "bearer token")
	logPath := fs.String("log", "", "attempt log of write")
	eventsPath := fs.String("events", "", "events file")
	target := fs.Duration("target", 10*time.Second, "target from the primary's kill to the first successful write")
	_ = fs.Parse(args)
	attempts, err := readAttempts(*logPath)
	if err != nil {
		return err
	}
	events, err := readEvents(*eventsPath)
	if err != nil {
		return err
	}
	killed, ok := events["kill_primary"]
	if !ok {
		return errors.New("events: no kill_primary")
	}
	held, err := listIDs(ctx, *base, *token)
	if err != nil {
		return fmt.Errorf("list entries after the run: %w", err)
	}

	acked := map[string]bool{}
	statuses := map[int]int{}
	var (
		firstAfter        int64 = -1
		bad5xx, badInFO   int
		failoverEnd       = killed + 30_000
		unavailableDuring int
	)
	if back, ok := events["replica_back"]; ok {
		failoverEnd = back
	}
	for _, a := range attempts {
		statuses[a.status]++
		if a.status == http.StatusCreated || a.status == http.StatusConflict {
			acked[a.id] = true
		}
		// The first write sent after the kill that succeeded: one sent before could have
		// committed before the kill.
		if a.sent >= killed && a.status == http.StatusCreated && (firstAfter < 0 || a.at < firstAfter) {
			firstAfter = a.at
		}
		if a.status >= 500 && a.status != http.StatusServiceUnavailable {
			bad5xx++
			if a.at >= killed && a.at < failoverEnd {
				badInFO++
			}
		}
		if a.at >= killed && a.at < failoverEnd && (a.status == http.StatusServiceUnavailable || a.status == 0) {
			unavailableDuring++
		}
	}
	var lost []string
	for id := range acked {
		if !held[id] {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	codes := make([]int, 0, len(statuses))
	for c := range statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d:%d", c, statuses[c]))
	}
	fmt.Printf("ha-smoke: attempts %d, answers by status %s (0 = no HTTP answer)\n", len(attempts), strings.Join(parts, " "))
	fmt.Printf("ha-smoke: acknowledged writes %d, held by the store after the failover %d\n", len(acked), len(held))
	fmt.Printf("ha-smoke: acknowledged writes lost: %d\n", len(lost))
	var failures []string
	if len(lost) > 0 {
		failures = append(failures, fmt.Sprintf("%d acknowledged writes lost (first: %s)", len(lost), lost[0]))
	}
	if firstAfter < 0 {
		fmt.Println("ha-smoke: seconds from the primary's kill to the first successful write: none succeeded")
		failures = append(failures, "no write succeeded after the primary's kill")
	} else {
		secs := float64(firstAfter-killed) / 1000
		verdict := "within"
		if time.Duration(secs*float64(time.Second)) > *target {
			verdict = "OVER"
		}
		fmt.Printf("ha-smoke: seconds from the primary's kill to the first successful write: %.2f (%s the %s target)\n", secs, verdict, *target)
	}
	fmt.Printf("ha-smoke: answers 503 or none while failing over: %d (retried)\n", unavailableDuring)
	fmt.Printf("ha-smoke: 5xx other than 503 during the failover: %d (whole run: %d)\n", badInFO, bad5xx)
	if bad5xx > 0 {
		failures = append(failures, fmt.Sprintf("%d answers were a 5xx other than 503", bad5xx))
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "; "))
	}
	return nil
}

func readAttempts(path string) ([]attempt, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []attempt
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		sent, _ := strconv.ParseInt(f[0], 10, 64)
		at, _ := strconv.ParseInt(f[1], 10, 64)
		st, _ := strconv.Atoi(f[2])
		out = append(out, attempt{sent: sent, at: at, status: st, id: f[3]})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out, nil
}

func readEvents(path string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			out[f[0]] = v
		}
	}
	return out, nil
}

// listIDs pages through the tenant's entries; a 503 (HAProxy between health checks) is
// retried for a few seconds.
func listIDs(ctx context.Context, base, token string) (map[string]bool, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	held := map[string]bool{}
	cursor := ""
	deadline := time.Now().Add(20 * time.Second)
	for {
		u := base + "/api/v1/certs?limit=500"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode == http.StatusServiceUnavailable {
			if resp != nil {
				_ = resp.Body.Close()
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("list entries: no answer: %v", err)
			}
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			NextCursor string `json:"nextCursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			return nil, fmt.Errorf("list entries: status %d: %v", resp.StatusCode, err)
		}
		for _, it := range page.Items {
			held[it.ID] = true
		}
		if page.NextCursor == "" {
			return held, nil
		}
		cursor = page.NextCursor
	}
}

// converge waits until the credentials.json of tenant in every data dir carries the
// generation want, and reports how long it took; it fails past within.
func converge(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("converge", flag.ExitOnError)
	dirs := fs.String("dirs", "", "comma-separated data directories of the replicas")
	tenant := fs.String("tenant", "", "tenant")
	want := fs.Int64("want", 0, "the generation the database holds")
	within := fs.Duration("within", 5*time.Second, "how long the files may take")
	_ = fs.Parse(args)
	start := time.Now()
	list := strings.Split(*dirs, ",")
	gens := make([]int64, len(list))
	for {
		same := true
		for i, d := range list {
			gens[i] = -1
			data, err := os.ReadFile(credfile.Path(d, *tenant))
			if err == nil {
				if h, err := credfile.ParseHeader(data); err == nil {
					gens[i] = h.Generation
				}
			}
			same = same && gens[i] == *want
		}
		if same {
			fmt.Printf("ha-smoke: every replica's credentials.json for %s is at generation %d (the database's) after %.2f s: converged\n",
				*tenant, *want, time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) > *within || ctx.Err() != nil {
			var parts []string
			for i, d := range list {
				parts = append(parts, fmt.Sprintf("%s=%d", filepath.Base(d), gens[i]))
			}
			fmt.Printf("ha-smoke: credentials.json generations after %s: %s, database %d: NOT converged\n",
				*within, strings.Join(parts, " "), *want)
			return errors.New("replicas' credentials.json did not converge")
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// paths runs the other query paths once each through the load balancer, after the
// failover: a deploy (a workspace transaction), the workspace read, a node's TLS resolution
// (the scoped one-round-trip lookup), one entry, its references, an update, a refused and
// an accepted delete, and the metrics. Each must answer what it answers on a direct
// database; a 503 is retried for a few seconds.
func paths(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("paths", flag.ExitOnError)
	base := fs.String("url", "", "base URL of the load balancer")
	token := fs.String("token", "", "bearer token")
	prefix := fs.String("prefix", "ha", "entry ID prefix of write")
	_ = fs.Parse(args)
	ref, renamed, gone := *prefix+"-0-00001", *prefix+"-0-00002", *prefix+"-0-00003"
	workspace := fmt.Sprintf(`{"flows":[{"id":"f1","label":"Flow f1","nodes":[
		{"id":"n1","type":"tcp-out","tls":{"caBundleRef":%q}}]}]}`, ref)
	steps := []struct {
		method, path, body string
		want               int
	}{
		{http.MethodPut, "/api/v1/flows", workspace, http.StatusOK},
		{http.MethodGet, "/api/v1/flows", "", http.StatusOK},
		{http.MethodGet, "/api/v1/flows/f1/nodes/n1/tls", "", http.StatusOK},
		{http.MethodGet, "/api/v1/certs/" + ref, "", http.StatusOK},
		{http.MethodGet, "/api/v1/certs/" + ref + "/references", "", http.StatusOK},
		{http.MethodDelete, "/api/v1/certs/" + ref, "", http.StatusConflict},
		{http.MethodPut, "/api/v1/certs/" + renamed, `{"name":"renamed after the failover"}`, http.StatusOK},
		{http.MethodDelete, "/api/v1/certs/" + gone, "", http.StatusNoContent},
		{http.MethodGet, "/api/v1/certs/" + gone, "", http.StatusNotFound},
		{http.MethodGet, "/metrics", "", http.StatusOK},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var failures []string
	for _, st := range steps {
		status := 0
		for deadline := time.Now().Add(10 * time.Second); ; {
			var body io.Reader
			if st.body != "" {
				body = strings.NewReader(st.body)
			}
			req, err := http.NewRequestWithContext(ctx, st.method, *base+st.path, body)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+*token)
			req.Header.Set("Content-Type", "application/json")
			if resp, err := client.Do(req); err == nil {
				status = resp.StatusCode
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			if (status != 0 && status != http.StatusServiceUnavailable) || time.Now().After(deadline) {
				break
			}
			sleep(ctx, 200*time.Millisecond)
		}
		if status != st.want {
			failures = append(failures, fmt.Sprintf("%s %s: %d, want %d", st.method, st.path, status, st.want))
		}
	}
	fmt.Printf("ha-smoke: other query paths through HAProxy and PgBouncer after the failover: %d of %d as expected\n",
		len(steps)-len(failures), len(steps))
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "; "))
	}
	return nil
}
