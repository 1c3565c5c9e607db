//go:build testcontainers

// The testcontainers source links the Docker client and its dependencies into every test
// binary that needs a database; it is built only with -tags testcontainers (CI's container
// pass, docs/containers.md), so `make test` compiles and links none of it.

package testdb

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

const (
	// defaultImage is the server the container source runs, matching docker-compose.yml.
	defaultImage = "postgres:16"
	// dockerProbeTimeout bounds the engine check: without an engine the harness must fall
	// through to the local binaries at once, never hang.
	dockerProbeTimeout = 2 * time.Second
	// forcedProbeTimeout is the engine check when LOOPZE_TEST_DB_SOURCE=testcontainers
	// insists on an engine: there is nothing to fall through to, and an engine busy
	// starting the containers of other test binaries may take longer than a quiet one.
	forcedProbeTimeout = 60 * time.Second
	// containerStartTimeout covers an image pull on a cold machine.
	containerStartTimeout = 5 * time.Minute
)

// openContainer starts a PostgreSQL container when a Docker-compatible engine answers.
// It reports false, after saying why on stderr, when there is no engine or the container
// cannot be had (image not pullable), so the caller falls through.
func openContainer() (*source, error) {
	timeout := dockerProbeTimeout
	if os.Getenv(EnvSource) == string(KindTestcontainers) {
		timeout = forcedProbeTimeout
	}
	if !dockerAnswers(timeout) {
		return nil, errNoEngine
	}
	image := cmp.Or(os.Getenv(EnvImage), defaultImage)
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	ctr, err := tcpostgres.Run(ctx, image,
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.BasicWaitStrategies(),
		testcontainers.WithCmd("postgres", "-c", "fsync=off", "-c", "synchronous_commit=off",
			"-c", "full_page_writes=off", "-c", "max_connections=200"),
	)
	fallThrough := func(err error) (*source, error) {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("testcontainers PostgreSQL (%s): %w", image, err)
	}
	if err != nil {
		return fallThrough(err)
	}
	dsn, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		return fallThrough(err)
	}
	conf, err := configFromURL(dsn)
	if err != nil {
		return fallThrough(err)
	}
	return &source{
		kind: KindTestcontainers,
		conf: conf,
		dump: func(ctx context.Context, dbURL string) ([]byte, error) { return containerDump(ctx, ctr, dbURL) },
		stop: func() {
			if err := testcontainers.TerminateContainer(ctr); err != nil {
				fmt.Fprintf(os.Stderr, "testdb: terminate PostgreSQL container: %v\n", err)
			}
		},
	}, nil
}

// dockerAnswers pings the engine testcontainers would use. The provider's constructor
// takes no context, so the whole check runs aside and is abandoned after the timeout.
func dockerAnswers(timeout time.Duration) bool {
	answer := make(chan bool, 1)
	go func() {
		defer func() {
			if recover() != nil { // testcontainers panics on some broken setups
				answer <- false
			}
		}()
		p, err := testcontainers.NewDockerProvider()
		if err != nil {
			answer <- false
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		answer <- p.Health(ctx) == nil // Health closes the provider
	}()
	select {
	case ok := <-answer:
		return ok
	case <-time.After(timeout + 500*time.Millisecond):
		return false
	}
}

// containerDump runs the container's own pg_dump, whose version matches the server
// whatever the host has installed. Stderr goes to the output only on failure.
func containerDump(ctx context.Context, ctr testcontainers.Container, dbURL string) ([]byte, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	script := `pg_dump -U postgres --dbname "$1" 2>/tmp/pg_dump.err || { cat /tmp/pg_dump.err; exit 1; }`
	code, out, err := ctr.Exec(ctx, []string{"sh", "-c", script, "sh", db}, tcexec.Multiplexed())
	if err != nil {
		return nil, fmt.Errorf("exec pg_dump in container: %w", err)
	}
	b, err := io.ReadAll(out)
	if err != nil {
		return nil, fmt.Errorf("read pg_dump output: %w", err)
	}
	if code != 0 {
		return nil, fmt.Errorf("pg_dump in container exited %d: %s", code, bytes.TrimSpace(b))
	}
	return b, nil
}
