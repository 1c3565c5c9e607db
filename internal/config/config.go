// Package config owns the service configuration: one struct, read from LOOPZE_* environment
// variables with defaults that work on a laptop, overridable by command-line flags that
// mirror every variable but the secrets (a flag would show them in the process list). It
// is built once in main and passed down; nothing reads the environment behind its back.
package config

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/secret"
)

// Config is the whole configuration of the service and its subcommands.
type Config struct {
	// Addr is the HTTP listen address (LOOPZE_ADDR).
	Addr string
	// DataDir holds loopze.key, credentials.json and, in embedded mode, the cluster (LOOPZE_DATA_DIR).
	DataDir string
	// DatabaseURL selects an external PostgreSQL; empty means the embedded cluster in DataDir/pg.
	DatabaseURL string
	// ListenDatabaseURL is a direct connection to the same database, past any transaction
	// pooler, for what needs a session: LISTEN and the migrations' advisory lock
	// (LOOPZE_LISTEN_DATABASE_URL). Empty uses DatabaseURL.
	ListenDatabaseURL string
	// DatabasePooler says what DatabaseURL goes through: auto (detect), none, session or
	// transaction (LOOPZE_DATABASE_POOLER).
	DatabasePooler string
	// LogFormat is "text" or "json".
	LogFormat string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// FileRoots optionally confines file-sourced material paths (LOOPZE_FILE_ROOTS, ':'-separated, {tenant} expanded).
	FileRoots string
	// JWTSecret is the HS256 secret (LOOPZE_JWT_SECRET); empty means DataDir/jwt.secret.
	JWTSecret secret.String
	// JWTPublicKeys is a PEM or JWKS file of RS256/ES256/EdDSA verification keys.
	JWTPublicKeys string
	// JWTIssuer and JWTAudience are checked when set.
	JWTIssuer, JWTAudience string
	// JWTMaxTTL is the furthest ahead a token's exp may lie (LOOPZE_JWT_MAX_TTL): a leaked
	// token minted for a century is refused. Zero or less is an invalid value.
	JWTMaxTTL time.Duration
	// AllowedOrigins lists extra origins allowed to make cookie-authenticated writes.
	AllowedOrigins []string
	// MetricsToken, when set, is the bearer token /metrics requires (LOOPZE_METRICS_TOKEN).
	MetricsToken secret.String
	// MetricsAddr, when set, is a listen address of its own for /metrics, which the main
	// listener then no longer serves (LOOPZE_METRICS_ADDR).
	MetricsAddr string
	// SecureCookies marks the session cookie Secure on plain HTTP too, for a server behind
	// a TLS-terminating proxy (LOOPZE_SECURE_COOKIES=true).
	SecureCookies bool
	// HistoryKeep is how many versions each entry keeps (LOOPZE_HISTORY_KEEP, at least 1).
	HistoryKeep int
	// HistoryDays is how long a deleted entry's history stays (LOOPZE_HISTORY_DAYS, at least 1).
	HistoryDays int
	// RateLimit* are the token buckets of authenticated requests: requests per second and
	// burst, per tenant and per token subject; a rate of 0 turns that bucket off.
	RateLimitTenant, RateLimitSubject           float64
	RateLimitTenantBurst, RateLimitSubjectBurst int
	// PollLimitTenant and PollLimitSubject cap the long polls of GET /api/v1/credentials
	// waiting at once, per tenant and per token subject within it; 0 turns a cap off.
	PollLimitTenant, PollLimitSubject int
	// KDFMemoryMiB is the memory the key derivations running at once may need together
	// (LOOPZE_KDF_MEMORY_MIB); KDFConcurrency how many run at once, 0 for one per
	// processor (LOOPZE_KDF_CONCURRENCY); KDFQueue how many requests may wait for one
	// (LOOPZE_KDF_QUEUE).
	KDFMemoryMiB, KDFConcurrency, KDFQueue int
	// MasterKeyURI says where the master key lives (LOOPZE_MASTER_KEY_URI): "file:" for
	// loopze.key in DataDir (the default), "file:/absolute/path", or a PKCS#11 URI (RFC
	// 7512). It has no flag: a pkcs11: URI may carry pin-value, which a flag would show in
	// the process list.
	MasterKeyURI string
	// KeyRotateEvery makes serve rotate the master key on this schedule, counted from the
	// last rotation recorded in the database (LOOPZE_KEY_ROTATE_EVERY); 0 is off.
	KeyRotateEvery time.Duration
}

// Environment variable names, listed once so flags, docs and errors agree.
const (
	EnvAddr           = "LOOPZE_ADDR"
	EnvDataDir        = "LOOPZE_DATA_DIR"
	EnvDatabaseURL    = "LOOPZE_DATABASE_URL"
	EnvListenURL      = "LOOPZE_LISTEN_DATABASE_URL"
	EnvPooler         = "LOOPZE_DATABASE_POOLER"
	EnvLogFormat      = "LOOPZE_LOG_FORMAT"
	EnvLogLevel       = "LOOPZE_LOG_LEVEL"
	EnvFileRoots      = "LOOPZE_FILE_ROOTS"
	EnvJWTSecret      = "LOOPZE_JWT_SECRET"
	EnvJWTPublicKeys  = "LOOPZE_JWT_PUBLIC_KEYS"
	EnvJWTIssuer      = "LOOPZE_JWT_ISSUER"
	EnvJWTAudience    = "LOOPZE_JWT_AUDIENCE"
	EnvJWTMaxTTL      = "LOOPZE_JWT_MAX_TTL"
	EnvAllowedOrigins = "LOOPZE_ALLOWED_ORIGINS"
	EnvSecureCookies  = "LOOPZE_SECURE_COOKIES"
	EnvMetricsToken   = "LOOPZE_METRICS_TOKEN"
	EnvMetricsAddr    = "LOOPZE_METRICS_ADDR"
	EnvHistoryKeep    = "LOOPZE_HISTORY_KEEP"
	EnvHistoryDays    = "LOOPZE_HISTORY_DAYS"

	EnvRateLimitTenant       = "LOOPZE_RATE_LIMIT_TENANT"
	EnvRateLimitTenantBurst  = "LOOPZE_RATE_LIMIT_TENANT_BURST"
	EnvRateLimitSubject      = "LOOPZE_RATE_LIMIT_SUBJECT"
	EnvRateLimitSubjectBurst = "LOOPZE_RATE_LIMIT_SUBJECT_BURST"

	EnvPollLimitTenant  = "LOOPZE_POLL_LIMIT_TENANT"
	EnvPollLimitSubject = "LOOPZE_POLL_LIMIT_SUBJECT"
	EnvKDFMemory        = "LOOPZE_KDF_MEMORY_MIB"
	EnvKDFConcurrency   = "LOOPZE_KDF_CONCURRENCY"
	EnvKDFQueue         = "LOOPZE_KDF_QUEUE"
	EnvMasterKeyURI     = "LOOPZE_MASTER_KEY_URI"
	EnvKeyRotateEvery   = "LOOPZE_KEY_ROTATE_EVERY"
)

// Defaults.
const (
	DefaultAddr    = "127.0.0.1:8080"
	DefaultDataDir = "./data"
	// DefaultHistoryKeep and DefaultHistoryDays are the history retention.
	DefaultHistoryKeep = 20
	DefaultHistoryDays = 90
	// DefaultJWTMaxTTL is 31 days: room for the 720h runtime tokens docs/runtime.md
	// suggests, and not much more.
	DefaultJWTMaxTTL = 31 * 24 * time.Hour

	// A tenant may sustain 100 requests a second with bursts of 200, one token subject
	// half that: generous for people and automation, short of starving other tenants.
	DefaultRateLimitTenant       = 100
	DefaultRateLimitTenantBurst  = 200
	DefaultRateLimitSubject      = 50
	DefaultRateLimitSubjectBurst = 100

	// A runtime holds one long poll at a time; a few more per subject cover a device
	// that reconnects while its last poll still waits on the server. A tenant's cap
	// bounds what all its runtimes together hold (a goroutine and a connection each).
	DefaultPollLimitTenant  = 1000
	DefaultPollLimitSubject = 8
	// The key derivation budget: 64 MiB fits one derivation at the largest parameters
	// accepted (32 MiB) beside smaller ones, within the serve default GOMEMLIMIT=128MiB
	// and a 256 MiB resident ceiling; a queue of 8 is a few seconds of work.
	DefaultKDFMemoryMiB = 64
	DefaultKDFQueue     = 8
	// MinKDFMemoryMiB is the largest single derivation accepted, rounded up: a smaller
	// budget could never admit it.
	MinKDFMemoryMiB = 33
	// DefaultMasterKeyURI is loopze.key in the data directory.
	DefaultMasterKeyURI = masterkey.SchemeFile
	// MinKeyRotateEvery is the shortest schedule of master key rotations accepted: each
	// rotation rewraps every tenant key, re-exports every file and asks every replica to
	// reload, and a schedule of minutes is far more likely a unit mistaken than a wish.
	MinKeyRotateEvery = time.Hour
)

// FromEnv reads the configuration from getenv (os.Getenv in main, a map in tests).
func FromEnv(getenv func(string) string) Config {
	return Config{
		Addr:              cmp.Or(getenv(EnvAddr), DefaultAddr),
		DataDir:           cmp.Or(getenv(EnvDataDir), DefaultDataDir),
		DatabaseURL:       getenv(EnvDatabaseURL),
		ListenDatabaseURL: getenv(EnvListenURL),
		DatabasePooler:    cmp.Or(getenv(EnvPooler), "auto"),
		LogFormat:         cmp.Or(getenv(EnvLogFormat), "text"),
		LogLevel:          cmp.Or(getenv(EnvLogLevel), "info"),
		FileRoots:         getenv(EnvFileRoots),
		JWTSecret:         secret.String(getenv(EnvJWTSecret)),
		JWTPublicKeys:     getenv(EnvJWTPublicKeys),
		JWTIssuer:         getenv(EnvJWTIssuer),
		JWTAudience:       getenv(EnvJWTAudience),
		JWTMaxTTL:         envDuration(getenv(EnvJWTMaxTTL), DefaultJWTMaxTTL),
		AllowedOrigins:    splitOrigins(getenv(EnvAllowedOrigins)),
		SecureCookies:     getenv(EnvSecureCookies) == "true" || getenv(EnvSecureCookies) == "1",
		MetricsToken:      secret.String(getenv(EnvMetricsToken)),
		MetricsAddr:       getenv(EnvMetricsAddr),
		HistoryKeep:       positive(getenv(EnvHistoryKeep), DefaultHistoryKeep),
		HistoryDays:       positive(getenv(EnvHistoryDays), DefaultHistoryDays),

		RateLimitTenant:       envFloat(getenv, EnvRateLimitTenant, DefaultRateLimitTenant),
		RateLimitTenantBurst:  int(envFloat(getenv, EnvRateLimitTenantBurst, DefaultRateLimitTenantBurst)),
		RateLimitSubject:      envFloat(getenv, EnvRateLimitSubject, DefaultRateLimitSubject),
		RateLimitSubjectBurst: int(envFloat(getenv, EnvRateLimitSubjectBurst, DefaultRateLimitSubjectBurst)),

		PollLimitTenant:  count(getenv(EnvPollLimitTenant), DefaultPollLimitTenant),
		PollLimitSubject: count(getenv(EnvPollLimitSubject), DefaultPollLimitSubject),

		KDFMemoryMiB:   count(getenv(EnvKDFMemory), DefaultKDFMemoryMiB),
		KDFConcurrency: count(getenv(EnvKDFConcurrency), 0),
		KDFQueue:       count(getenv(EnvKDFQueue), DefaultKDFQueue),

		MasterKeyURI:   cmp.Or(strings.TrimSpace(getenv(EnvMasterKeyURI)), DefaultMasterKeyURI),
		KeyRotateEvery: envDuration(getenv(EnvKeyRotateEvery), 0),
	}
}

// count parses a count that may be 0 from the environment: def when empty, -1 (refused by
// Validate) when it is not a whole number.
func count(s string, def int) int {
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// positive parses a count from the environment: def when empty, 0 (refused by Validate)
// when it is not a whole number.
func positive(s string, def int) int {
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// splitOrigins reads a ','-separated list of origins, skipping blanks.
func splitOrigins(s string) []string {
	var origins []string
	for o := range strings.SplitSeq(s, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	return origins
}

// envDuration reads a Go duration, or def when unset. A value that does not parse becomes
// -1, which Validate reports.
func envDuration(s string, def time.Duration) time.Duration {
	s = strings.TrimSpace(s)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return -1
	}
	return d
}

// envFloat reads a number, or def when unset. A value that is not a number becomes NaN,
// which Validate reports.
func envFloat(getenv func(string) string, name string, def float64) float64 {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

func (c *Config) registerRateLimitFlags(fs *flag.FlagSet) {
	fs.Float64Var(&c.RateLimitTenant, "rate-limit-tenant", c.RateLimitTenant, "requests per second one tenant may sustain; 0 turns the bucket off ("+EnvRateLimitTenant+")")
	fs.IntVar(&c.RateLimitTenantBurst, "rate-limit-tenant-burst", c.RateLimitTenantBurst, "burst of the tenant bucket ("+EnvRateLimitTenantBurst+")")
	fs.Float64Var(&c.RateLimitSubject, "rate-limit-subject", c.RateLimitSubject, "requests per second one token subject may sustain; 0 turns the bucket off ("+EnvRateLimitSubject+")")
	fs.IntVar(&c.RateLimitSubjectBurst, "rate-limit-subject-burst", c.RateLimitSubjectBurst, "burst of the subject bucket ("+EnvRateLimitSubjectBurst+")")
	fs.IntVar(&c.PollLimitTenant, "poll-limit-tenant", c.PollLimitTenant, "long polls of the credentials route one tenant may have waiting; 0 turns the cap off ("+EnvPollLimitTenant+")")
	fs.IntVar(&c.PollLimitSubject, "poll-limit-subject", c.PollLimitSubject, "long polls of the credentials route one token subject may have waiting; 0 turns the cap off ("+EnvPollLimitSubject+")")
}

func (c *Config) registerKDFFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.KDFMemoryMiB, "kdf-memory-mib", c.KDFMemoryMiB, "MiB the key derivations running at once may need together ("+EnvKDFMemory+")")
	fs.IntVar(&c.KDFConcurrency, "kdf-concurrency", c.KDFConcurrency, "key derivations that run at once; 0 is one per processor ("+EnvKDFConcurrency+")")
	fs.IntVar(&c.KDFQueue, "kdf-queue", c.KDFQueue, "requests that may wait for a key derivation; more are answered 503 ("+EnvKDFQueue+")")
}

// RegisterFlags adds flags mirroring the environment to fs, with c's values as defaults, so
// a flag overrides the variable and the variable overrides the built-in default.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "HTTP listen address ("+EnvAddr+")")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "data directory ("+EnvDataDir+")")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL URL; empty runs the embedded cluster ("+EnvDatabaseURL+")")
	fs.StringVar(&c.ListenDatabaseURL, "listen-database-url", c.ListenDatabaseURL, "direct PostgreSQL URL past any transaction pooler, for LISTEN and migrations; empty uses the database URL ("+EnvListenURL+")")
	fs.StringVar(&c.DatabasePooler, "database-pooler", c.DatabasePooler, "what the database URL goes through: auto, none, session or transaction ("+EnvPooler+")")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json ("+EnvLogFormat+")")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error ("+EnvLogLevel+")")
	fs.StringVar(&c.FileRoots, "file-roots", c.FileRoots, "directories file paths must lie in, ':'-separated, {tenant} expanded ("+EnvFileRoots+")")
	fs.StringVar(&c.JWTPublicKeys, "jwt-public-keys", c.JWTPublicKeys, "PEM or JWKS file of JWT verification keys ("+EnvJWTPublicKeys+")")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", c.JWTIssuer, "required JWT iss ("+EnvJWTIssuer+")")
	fs.StringVar(&c.JWTAudience, "jwt-audience", c.JWTAudience, "required JWT aud ("+EnvJWTAudience+")")
	fs.DurationVar(&c.JWTMaxTTL, "jwt-max-ttl", c.JWTMaxTTL, "the furthest ahead a token's exp may lie, e.g. 744h ("+EnvJWTMaxTTL+")")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "separate listen address for /metrics; empty serves it on --addr ("+EnvMetricsAddr+")")
	fs.IntVar(&c.HistoryKeep, "history-keep", c.HistoryKeep, "versions each entry keeps ("+EnvHistoryKeep+")")
	fs.IntVar(&c.HistoryDays, "history-days", c.HistoryDays, "days a deleted entry's history stays ("+EnvHistoryDays+")")
	fs.Func("allowed-origins", "extra origins allowed to make cookie-authenticated writes, ','-separated ("+EnvAllowedOrigins+")", func(s string) error {
		c.AllowedOrigins = splitOrigins(s)
		return nil
	})
	fs.BoolVar(&c.SecureCookies, "secure-cookies", c.SecureCookies, "mark the session cookie Secure behind a TLS-terminating proxy ("+EnvSecureCookies+")")
	fs.DurationVar(&c.KeyRotateEvery, "key-rotate-every", c.KeyRotateEvery, "rotate the master key on this schedule, e.g. 2160h; 0 is off ("+EnvKeyRotateEvery+")")
	c.registerRateLimitFlags(fs)
	c.registerKDFFlags(fs)
}

// RegisterFlagsOf adds only the named flags of RegisterFlags to fs, for a subcommand that
// uses only those settings.
func (c *Config) RegisterFlagsOf(fs *flag.FlagSet, names ...string) {
	all := flag.NewFlagSet("", flag.ContinueOnError)
	c.RegisterFlags(all)
	for _, n := range names {
		if f := all.Lookup(n); f != nil {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	}
}

// Validate checks what can be checked without side effects, so bad configuration fails
// with one clear line before anything starts.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("%s %q is not host:port", EnvAddr, c.Addr))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not host:port", EnvMetricsAddr, c.MetricsAddr))
		} else if c.MetricsAddr == c.Addr {
			errs = append(errs, fmt.Errorf("%s must differ from %s", EnvMetricsAddr, EnvAddr))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, fmt.Errorf("%s must not be empty", EnvDataDir))
	}
	if c.DatabaseURL != "" {
		if err := checkDatabaseURL(EnvDatabaseURL, c.DatabaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ListenDatabaseURL != "" {
		if c.DatabaseURL == "" {
			errs = append(errs, fmt.Errorf("%s needs %s: the embedded cluster has no pooler to go past", EnvListenURL, EnvDatabaseURL))
		} else if err := checkDatabaseURL(EnvListenURL, c.ListenDatabaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	switch c.DatabasePooler {
	case "auto", "none", "session", "transaction":
	default:
		errs = append(errs, fmt.Errorf("%s %q: want auto, none, session or transaction", EnvPooler, c.DatabasePooler))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("%s %q: want text or json", EnvLogFormat, c.LogFormat))
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.JWTMaxTTL <= 0 {
		errs = append(errs, fmt.Errorf("%s: want a positive duration such as 744h", EnvJWTMaxTTL))
	}
	if c.HistoryKeep < 1 {
		errs = append(errs, fmt.Errorf("%s must be a whole number of at least 1", EnvHistoryKeep))
	}
	if c.HistoryDays < 1 || c.HistoryDays > 36500 {
		errs = append(errs, fmt.Errorf("%s must be a whole number of days from 1 to 36500", EnvHistoryDays))
	}
	for _, r := range []struct {
		name  string
		rate  float64
		burst int
	}{{EnvRateLimitTenant, c.RateLimitTenant, c.RateLimitTenantBurst}, {EnvRateLimitSubject, c.RateLimitSubject, c.RateLimitSubjectBurst}} {
		switch {
		case math.IsNaN(r.rate) || r.rate < 0 || math.IsInf(r.rate, 0):
			errs = append(errs, fmt.Errorf("%s: want requests per second, 0 or more", r.name))
		case r.rate > 0 && r.burst < 1:
			errs = append(errs, fmt.Errorf("%s_BURST: want 1 or more", r.name))
		}
	}
	for _, p := range []struct {
		name string
		n    int
	}{{EnvPollLimitTenant, c.PollLimitTenant}, {EnvPollLimitSubject, c.PollLimitSubject}} {
		if p.n < 0 {
			errs = append(errs, fmt.Errorf("%s: want a whole number of polls, 0 or more", p.name))
		}
	}
	if c.KDFMemoryMiB < MinKDFMemoryMiB || c.KDFMemoryMiB > 1<<20 {
		errs = append(errs, fmt.Errorf("%s: want a whole number of MiB from %d (the largest key derivation accepted) to 1048576", EnvKDFMemory, MinKDFMemoryMiB))
	}
	if c.KDFConcurrency < 0 || c.KDFConcurrency > 1024 {
		errs = append(errs, fmt.Errorf("%s: want a whole number from 0 (one per processor) to 1024", EnvKDFConcurrency))
	}
	if c.KDFQueue < 1 || c.KDFQueue > 1<<16 {
		errs = append(errs, fmt.Errorf("%s: want a whole number from 1 to 65536", EnvKDFQueue))
	}
	switch {
	case c.KeyRotateEvery < 0:
		errs = append(errs, fmt.Errorf("%s: want a duration such as 2160h, or 0 for off", EnvKeyRotateEvery))
	case c.KeyRotateEvery > 0 && c.KeyRotateEvery < MinKeyRotateEvery:
		errs = append(errs, fmt.Errorf("%s: %s is shorter than the minimum of %s; want a duration such as 2160h, or 0 for off",
			EnvKeyRotateEvery, c.KeyRotateEvery, MinKeyRotateEvery))
	}
	if err := masterkey.CheckURI(c.MasterKeyURI); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvMasterKeyURI, err))
	}
	return errors.Join(errs...)
}

// checkDatabaseURL rejects URLs pgx would refuse, without echoing a password. A
// multi-host URL (postgres://u@h1:5432,h2:5432/db) is not a URL net/url can parse, so the
// host list is checked apart from the rest.
func checkDatabaseURL(name, raw string) error {
	if rest, ok := strings.CutPrefix(raw, "postgres://"); ok || strings.HasPrefix(raw, "postgresql://") {
		if !ok {
			rest = strings.TrimPrefix(raw, "postgresql://")
		}
		authority, tail, _ := strings.Cut(rest, "/")
		userinfo, hosts, found := strings.Cut(authority, "@")
		if !found {
			userinfo, hosts = "", authority
		}
		for h := range strings.SplitSeq(hosts, ",") {
			if _, err := url.Parse("postgres://" + userinfo + "@" + h + "/" + tail); err != nil {
				return fmt.Errorf("%s is not a valid URL (expected postgres://user:pass@host:5432/db)", name)
			}
		}
		return nil
	}
	if strings.Contains(raw, "=") { // keyword/value form: host=... dbname=...
		return nil
	}
	return fmt.Errorf("%s is not a PostgreSQL URL (expected postgres://user:pass@host:5432/db)", name)
}

// DirectDatabaseURL is the connection for LISTEN and migrations: ListenDatabaseURL when
// set, DatabaseURL otherwise.
func (c *Config) DirectDatabaseURL() string { return cmp.Or(c.ListenDatabaseURL, c.DatabaseURL) }

// ParseLevel maps a level name to slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%s %q: want debug, info, warn or error", EnvLogLevel, s)
	}
	return l, nil
}

// Embedded reports whether the service runs its own PostgreSQL.
func (c *Config) Embedded() bool { return c.DatabaseURL == "" }

// ClusterDir is where the embedded cluster lives.
func (c *Config) ClusterDir() string { return filepath.Join(c.DataDir, "pg") }

// EnsureDataDir creates the data directory and proves it writable. It is created 0700, or
// 0711 in embedded mode, where the postgres user must be able to pass through it to reach
// the cluster in pg/ (it still cannot list it).
func (c *Config) EnsureDataDir() error {
	mode := os.FileMode(0o700)
	if c.Embedded() {
		mode = 0o711
	}
	if err := os.MkdirAll(c.DataDir, mode); err != nil {
		return fmt.Errorf("data dir %s: %w", c.DataDir, err)
	}
	f, err := os.CreateTemp(c.DataDir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", c.DataDir, err)
	}
	name := f.Name()
	_ = f.Close()
	_ = os.Remove(name)
	return nil
}
