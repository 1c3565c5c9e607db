package certstore_test

import (
	"bufio"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
)

// loadCompose loads docker-compose.yml the way `docker compose` does, with env as the only
// interpolation source so the developer's own environment cannot change the outcome.
func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"},
		cli.WithWorkingDirectory("."),
		cli.WithEnv(env),
	)
	require.NoError(t, err)
	project, err := opts.LoadProject(t.Context())
	require.NoError(t, err)
	return project
}

// service returns the named service or fails the test.
func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	svc, ok := p.Services[name]
	require.Truef(t, ok, "compose file has no %q service", name)
	return svc
}

// envValue returns a service's environment variable, failing when it is not set.
func envValue(t *testing.T, svc types.ServiceConfig, key string) string {
	t.Helper()
	v, ok := svc.Environment[key]
	require.Truef(t, ok && v != nil, "service %s does not set %s", svc.Name, key)
	return *v
}

// requireNamedVolume asserts svc mounts a named volume, declared at the top level, at target.
func requireNamedVolume(t *testing.T, p *types.Project, svc types.ServiceConfig, target string) {
	t.Helper()
	for _, v := range svc.Volumes {
		if v.Target != target {
			continue
		}
		require.Equalf(t, types.VolumeTypeVolume, v.Type, "%s:%s must be a named volume", svc.Name, target)
		_, declared := p.Volumes[v.Source]
		require.Truef(t, declared, "volume %q used by %s is not declared", v.Source, svc.Name)
		return
	}
	require.Failf(t, "missing volume", "service %s mounts nothing at %s", svc.Name, target)
}

func TestComposeDatabase(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	db := service(t, p, "db")

	require.NotNil(t, db.HealthCheck, "db needs a healthcheck for server's depends_on")
	require.False(t, db.HealthCheck.Disable)
	require.Equal(t, types.HealthCheckTest{"CMD", "pg_isready", "-U", "loopze", "-d", "loopze"}, db.HealthCheck.Test)
	requireNamedVolume(t, p, db, "/var/lib/postgresql/data")
	for _, k := range []string{"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} {
		require.Equal(t, "loopze", envValue(t, db, k), k)
	}
}

func TestComposeDatabaseImage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{name: "public image by default", want: "postgres:16"},
		{name: "empty setting keeps the default", env: []string{"LOOPZE_PG_IMAGE="}, want: "postgres:16"},
		{
			name: "locally built image where no registry answers",
			env:  []string{"LOOPZE_PG_IMAGE=localhost/loopze-postgres:15"},
			want: "localhost/loopze-postgres:15",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, service(t, loadCompose(t, tt.env...), "db").Image)
		})
	}
}

func TestComposeServer(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	srv := service(t, p, "server")

	require.NotNil(t, srv.Build, "server must build from the repository")
	require.Equal(t, "Dockerfile", srv.Build.Dockerfile)
	wd, err := os.Getwd()
	require.NoError(t, err)
	require.Equal(t, wd, srv.Build.Context, "build context must be the module root")

	dep, ok := srv.DependsOn["db"]
	require.True(t, ok, "server must depend on db")
	require.Equal(t, types.ServiceConditionHealthy, dep.Condition)

	require.NotNil(t, srv.HealthCheck)
	require.False(t, srv.HealthCheck.Disable)
	require.GreaterOrEqual(t, len(srv.HealthCheck.Test), 3)
	require.Equal(t, []string{"CMD", "/loopze-certs", "healthcheck"}, []string(srv.HealthCheck.Test[:3]),
		"scratch has no shell: the healthcheck must exec the binary")

	require.Equal(t, types.RestartPolicyUnlessStopped, srv.Restart)
	require.Equal(t, "0.0.0.0:8080", envValue(t, srv, "LOOPZE_ADDR"), "loopback inside a container is unreachable")
	require.Equal(t, "/data", envValue(t, srv, "LOOPZE_DATA_DIR"))
	requireNamedVolume(t, p, srv, "/data")

	require.Len(t, srv.Ports, 1)
	port := srv.Ports[0]
	require.Equal(t, "127.0.0.1", port.HostIP, "the API must not be published on every interface")
	require.Equal(t, "8080", port.Published)
	require.Equal(t, uint32(8080), port.Target)

	secret, set := srv.Environment["LOOPZE_JWT_SECRET"]
	require.True(t, set, "LOOPZE_JWT_SECRET must pass through from the shell")
	require.Nil(t, secret, "without a shell value the server must keep its own secret file")

	u, err := url.Parse(envValue(t, srv, "LOOPZE_DATABASE_URL"))
	require.NoError(t, err)
	require.Equal(t, "postgres", u.Scheme)
	require.Equal(t, "db", u.Hostname(), "the database host must be the db service")
	require.Equal(t, "5432", u.Port())
	require.Equal(t, "loopze", u.User.Username())
	pw, _ := u.User.Password()
	require.Equal(t, envValue(t, service(t, p, "db"), "POSTGRES_PASSWORD"), pw)
	require.Equal(t, "loopze", strings.TrimPrefix(u.Path, "/"))
	require.Equal(t, "disable", u.Query().Get("sslmode"))
}

func TestComposeSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		env        []string
		wantPort   string
		wantSecret *string
	}{
		{name: "defaults", wantPort: "8080"},
		{name: "host port moved", env: []string{"LOOPZE_HTTP_PORT=18081"}, wantPort: "18081"},
		{
			name:       "secret from the shell",
			env:        []string{"LOOPZE_JWT_SECRET=0123456789abcdef0123456789abcdef"},
			wantPort:   "8080",
			wantSecret: ptr("0123456789abcdef0123456789abcdef"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := service(t, loadCompose(t, tt.env...), "server")
			require.Len(t, srv.Ports, 1)
			require.Equal(t, tt.wantPort, srv.Ports[0].Published)
			require.Equal(t, "127.0.0.1", srv.Ports[0].HostIP)
			require.Equal(t, tt.wantSecret, srv.Environment["LOOPZE_JWT_SECRET"])
		})
	}
}

func ptr(s string) *string { return &s }

// dockerfileInstr is one instruction of a Dockerfile: keyword and the rest of the line,
// with backslash continuations joined.
type dockerfileInstr struct {
	keyword, args string
}

// readDockerfile splits path into instructions; comments and blank lines are dropped.
func readDockerfile(t *testing.T, path string) []dockerfileInstr {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var (
		out  []dockerfileInstr
		line strings.Builder
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if line.Len() == 0 && (text == "" || strings.HasPrefix(text, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(text, "\\"); ok {
			line.WriteString(cont + " ")
			continue
		}
		line.WriteString(text)
		kw, args, _ := strings.Cut(line.String(), " ")
		out = append(out, dockerfileInstr{keyword: strings.ToUpper(kw), args: strings.TrimSpace(args)})
		line.Reset()
	}
	require.NoError(t, sc.Err())
	return out
}

// finalStage returns the instructions after the last FROM.
func finalStage(instrs []dockerfileInstr) []dockerfileInstr {
	last := -1
	for i, in := range instrs {
		if in.keyword == "FROM" {
			last = i
		}
	}
	return instrs[last+1:]
}

// TestContainerfileMatchesDockerfile keeps the registry-free image (a host-built binary,
// deploy/Containerfile.scratch) the same image as the Dockerfile's final stage, apart
// from where the files come from.
func TestContainerfileMatchesDockerfile(t *testing.T) {
	t.Parallel()
	settings := func(path string) []dockerfileInstr {
		var out []dockerfileInstr
		for _, in := range finalStage(readDockerfile(t, path)) {
			if in.keyword != "COPY" {
				out = append(out, in)
			}
		}
		return out
	}
	want := settings("Dockerfile")
	require.NotEmpty(t, want)
	require.Equal(t, want, settings("deploy/Containerfile.scratch"))

	from := readDockerfile(t, "deploy/Containerfile.scratch")
	require.Equal(t, dockerfileInstr{keyword: "FROM", args: "scratch"}, from[0], "nothing may need a registry")
	var targets []string
	for _, in := range finalStage(from) {
		if in.keyword == "COPY" {
			f := strings.Fields(in.args)
			targets = append(targets, f[len(f)-1])
		}
	}
	require.Equal(t, []string{"/loopze-certs", "/data"}, targets)
}

// TestScriptsParse catches a syntax error in the container scripts before CI runs them.
func TestScriptsParse(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	for _, script := range []string{"scripts/container-engine", "scripts/compose-smoke", "deploy/postgres-entrypoint.sh"} {
		t.Run(script, func(t *testing.T) {
			t.Parallel()
			info, err := os.Stat(script)
			require.NoError(t, err)
			require.NotZero(t, info.Mode()&0o111, "%s must be executable", script)
			out, err := exec.CommandContext(t.Context(), bash, "-n", script).CombinedOutput()
			require.NoError(t, err, "%s", out)
		})
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	instrs := readDockerfile(t, "Dockerfile")

	var (
		froms       []string
		buildsCmd   bool
		user        string
		entrypoint  string
		cmd         string
		exposesHTTP bool
	)
	for _, in := range instrs {
		switch in.keyword {
		case "FROM":
			froms = append(froms, in.args)
		case "RUN":
			if strings.Contains(in.args, "go build") {
				require.Contains(t, in.args, "CGO_ENABLED=0", "scratch has no libc")
				require.True(t, strings.HasSuffix(in.args, " ./cmd/server"), "build must target ./cmd/server: %s", in.args)
				buildsCmd = true
			}
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "CMD":
			cmd = in.args
		case "EXPOSE":
			exposesHTTP = exposesHTTP || in.args == "8080"
		}
	}
	require.GreaterOrEqual(t, len(froms), 2, "multi-stage build expected")
	require.True(t, strings.HasPrefix(froms[0], "golang:1.26 "), "build stage: %s", froms[0])
	require.Equal(t, "scratch", froms[len(froms)-1], "final stage must be a static image")
	require.True(t, buildsCmd, "no go build of ./cmd/server")
	require.NotEmpty(t, user, "final stage must not run as root")
	require.NotContains(t, []string{"0", "root", "0:0", "root:root"}, user)
	require.Equal(t, `["/loopze-certs"]`, entrypoint)
	require.Equal(t, `["serve"]`, cmd)
	require.True(t, exposesHTTP, "EXPOSE 8080 missing")
}
