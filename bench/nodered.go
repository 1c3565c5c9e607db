package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nodeREDVersion is the peer LOOPZE users know, pinned so runs compare.
const nodeREDVersion = "4.1.15"

// nodeREDDir is where the peer is installed: a cache kept across runs, since npm takes
// longer than the whole quick bench.
func nodeREDDir() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache dir for Node-RED: %w", err)
	}
	return filepath.Join(cache, "loopze-bench", "node-red-"+nodeREDVersion), nil
}

// installNodeRED installs node-red@nodeREDVersion with npm unless the cache has it, and
// returns the path of its red.js.
func installNodeRED(ctx context.Context) (string, error) {
	dir, err := nodeREDDir()
	if err != nil {
		return "", err
	}
	red := filepath.Join(dir, "node_modules", "node-red", "red.js")
	pkg, err := os.ReadFile(filepath.Join(dir, "node_modules", "node-red", "package.json"))
	if err == nil {
		var meta struct {
			Version string `json:"version"`
		}
		if json.Unmarshal(pkg, &meta) == nil && meta.Version == nodeREDVersion {
			return red, nil
		}
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", errors.New("npm is not installed")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error",
		"node-red@"+nodeREDVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install node-red@%s: %w: %s", nodeREDVersion, err, lastLines(string(out), 3))
	}
	return red, nil
}

// nodeREDSettings runs the peer on loopback only, without auth (the admin API is reached
// from this process alone), without update checks or palette installs.
const nodeREDSettings = `module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %d,
    flowFile: "flows.json",
    credentialSecret: "loopze-bench",
    httpNodeRoot: false,
    logging: { console: { level: "warn", metrics: false, audit: false } },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    editorTheme: { projects: { enabled: false }, tours: false },
};
`

// nodeREDFlows is the peer's version of workspaceDoc: one tab, one tls-config holding the
// run's CA (a file, as Node-RED reads it), n `tcp request` nodes sharing it.
func nodeREDFlows(prefix, caPath string, n int) []byte {
	flows := []map[string]any{
		{"id": "ingest", "type": "tab", "label": "Ingest"},
		{"id": "bench-tls", "type": "tls-config", "name": deployCA, "cert": "", "key": "", "ca": caPath,
			"certname": "", "keyname": "", "caname": "", "servername": "plc.example.internal", "verifyservercert": true},
	}
	for i := range n {
		flows = append(flows, map[string]any{
			"id": fmt.Sprintf("%s-%05d", prefix, i), "type": "tcp request", "z": "ingest", "name": fmt.Sprintf("line %d", i),
			"server": "plc.example.internal", "port": strconv.Itoa(9000 + i%100), "out": "time", "ret": "buffer",
			"splitc": "0", "newline": "", "trim": false, "tls": "bench-tls", "x": 200, "y": 40 + i%50*40, "wires": [][]string{{}},
		})
	}
	doc, _ := json.Marshal(map[string]any{"flows": flows})
	return doc
}

// scenarioNodeRED: the same deploy against Node-RED's admin API (full deploys, alternating
// node IDs like ours), compared by p50.
func (b *bench) scenarioNodeRED(ctx context.Context) error {
	name := fmt.Sprintf("Node-RED %s deploy, %d tcp request nodes", nodeREDVersion, b.s.Nodes)
	target := "our p50 <= 0.5 x Node-RED's"
	skip := func(status, why string) error {
		b.add(Row{Scenario: name, Target: target, Status: status, Note: why})
		return nil
	}
	if !b.s.NodeRED {
		return skip(statusSkipped, "Node-RED peer switched off (-nodered=false)")
	}
	if b.ourDeployP50 <= 0 {
		return skip(statusNotAvailable, "no PUT /api/v1/flows figure to compare")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return skip(statusSkipped, "node is not installed")
	}
	t0 := time.Now()
	red, err := installNodeRED(ctx)
	if err != nil {
		return skip(statusSkipped, err.Error())
	}
	b.progress("  node-red@%s ready in %s", nodeREDVersion, since(t0))

	dir := filepath.Join(b.tmp, fmt.Sprintf("node-red-%d", b.run)) // a fresh user dir each run
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("create Node-RED user dir: %w", err)
	}
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, b.pki.ca, 0o600); err != nil {
		return fmt.Errorf("write CA for Node-RED: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	settings := filepath.Join(dir, "settings.js")
	if err := os.WriteFile(settings, fmt.Appendf(nil, nodeREDSettings, port), 0o600); err != nil {
		return fmt.Errorf("write Node-RED settings: %w", err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(node, red, "--settings", settings, "--userDir", dir, "--port", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return skip(statusSkipped, "start Node-RED: "+err.Error())
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		// Stopped by its PID, here and now, whatever happened.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitNodeRED(ctx, base, exited); err != nil {
		return skip(statusNotAvailable, fmt.Sprintf("%v: %s", err, lastLines(logs.String(), 3)))
	}
	docs := [2][]byte{nodeREDFlows("a", caPath, b.s.Nodes), nodeREDFlows("b", caPath, b.s.Nodes)}
	i := 0
	res := runSequence(ctx, 2, b.s.Deploys, func(ctx context.Context, _ int, _ *rand.Rand) error {
		req, _ := http.NewRequest(http.MethodPost, base+"/flows", bytes.NewReader(docs[i%2]))
		i++
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Node-RED-API-Version", "v2")
		req.Header.Set("Node-RED-Deployment-Type", "full")
		return do(ctx, b.client, req, http.StatusOK)
	})
	r := loadRow(name, res)
	r.Throughput, r.Target = 0, target
	peer := res.Hist.Quantile(0.5)
	if res.Ops == 0 || peer <= 0 {
		r.Status = statusNotAvailable
		b.add(r)
		return nil
	}
	r.Baseline = "our p50 " + fmtDur(b.ourDeployP50)
	r.Ratio = float64(b.ourDeployP50) / float64(peer)
	r.Status = judge(r.Errors == 0 && r.Ratio <= 0.5)
	r.Note = joinNote(r.Note, fmt.Sprintf("%d sequential full deploys through POST /flows; ratio is ours / Node-RED's p50", res.Ops))
	if msgs := strings.TrimSpace(logs.String()); strings.Contains(msgs, "[error]") {
		r.Note = joinNote(r.Note, "Node-RED logged errors: "+lastLines(msgs, 2))
	}
	b.add(r)
	b.profileHTTP(ctx, r, "deploy-vs-nodered", 1, b.deployRequest(), http.StatusOK)
	return nil
}

// waitNodeRED waits for the admin API to answer.
func waitNodeRED(ctx context.Context, base string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/flows", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("Node-RED exited during start")
		case <-ctx.Done():
			return fmt.Errorf("Node-RED did not answer: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
