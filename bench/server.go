package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is the real binary, built for this run and serving on a loopback port.
type server struct {
	bin     string
	dataDir string
	base    string // http://127.0.0.1:port
	env     []string
	cmd     *exec.Cmd
	exited  chan struct{}
	stderr  *bytes.Buffer
}

// buildServer compiles ./cmd/server of the module at root into dir.
func buildServer(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "loopze-certs")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/server")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build server: %w: %s", err, lastLines(string(out), 10))
	}
	return bin, nil
}

// freePort asks the kernel for a free loopback port. Another process could take it before
// the server listens; the server then fails at once and the bench says so.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// newServer prepares the environment the binary runs with: the run's database, a data
// dir of its own, warnings only.
func newServer(bin, dataDir, databaseURL string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := append(os.Environ(),
		"LOOPZE_DATABASE_URL="+databaseURL,
		"LOOPZE_DATA_DIR="+dataDir,
		"LOOPZE_ADDR="+addr,
		"LOOPZE_LOG_LEVEL=warn",
		// The history scenario lists 1,000 versions of one entry: keep them all.
		"LOOPZE_HISTORY_KEEP=100000",
		// The load scenarios measure the server, not its rate limits.
		"LOOPZE_RATE_LIMIT_TENANT=0",
		"LOOPZE_RATE_LIMIT_SUBJECT=0",
	)
	return &server{bin: bin, dataDir: dataDir, base: "http://" + addr, env: env}, nil
}

// run executes a subcommand of the binary with the server's environment and returns its
// standard output.
func (s *server) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Env = s.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("loopze-certs %s: %w: %s", args[0], err, lastLines(stderr.String(), 5))
	}
	return string(out), nil
}

// token mints a JWT with the binary's token subcommand, as an operator would.
func (s *server) token(ctx context.Context, tenant, role string) (string, error) {
	out, err := s.run(ctx, "token", "--tenant", tenant, "--role", role, "--sub", "bench", "--ttl", "3h")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// start launches `serve` and waits until /readyz answers 200. The server is in its own
// process group and gets SIGKILL from the kernel if the bench dies without stopping it.
func (s *server) start(ctx context.Context) error {
	cmd := exec.Command(s.bin, "serve")
	cmd.Env = s.env
	s.stderr = &bytes.Buffer{}
	cmd.Stdout = s.stderr
	cmd.Stderr = s.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()

	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("server exited during start: %s", lastLines(s.stderr.String(), 10))
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w: %s", ctx.Err(), lastLines(s.stderr.String(), 10))
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM (a graceful drain), then SIGKILL after a grace period.
func (s *server) stop() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("server did not stop within 30s of SIGTERM; killed")
	}
}

// pid is the server's process ID.
func (s *server) pid() int { return s.cmd.Process.Pid }

// procStatus reads a "kB" field (VmRSS, VmHWM) of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				break
			}
			kb, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s: %w", field, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
