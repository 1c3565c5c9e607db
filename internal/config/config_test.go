package config_test

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaultsWorkOnALaptop(t *testing.T) {
	t.Parallel()
	c := config.FromEnv(env(nil))
	require.Equal(t, "127.0.0.1:8080", c.Addr)
	require.Equal(t, "./data", c.DataDir)
	require.True(t, c.Embedded())
	require.Equal(t, "data/pg", c.ClusterDir())
	require.NoError(t, c.Validate())
	require.False(t, c.SecureCookies)
	require.Equal(t, config.DefaultPollLimitTenant, c.PollLimitTenant)
	require.Equal(t, config.DefaultPollLimitSubject, c.PollLimitSubject)
	off := config.FromEnv(env(map[string]string{"LOOPZE_POLL_LIMIT_TENANT": "0", "LOOPZE_POLL_LIMIT_SUBJECT": " 3 "}))
	require.NoError(t, off.Validate())
	require.Equal(t, 0, off.PollLimitTenant, "0 turns the cap off")
	require.Equal(t, 3, off.PollLimitSubject)
	require.Equal(t, []int{64, 0, 8}, []int{c.KDFMemoryMiB, c.KDFConcurrency, c.KDFQueue})
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	c := config.FromEnv(env(map[string]string{
		"LOOPZE_ADDR": "0.0.0.0:9000", "LOOPZE_DATABASE_URL": "postgres://u:p@db:5432/x",
		"LOOPZE_ALLOWED_ORIGINS": " https://a.example , ,https://b.example", "LOOPZE_SECURE_COOKIES": "true",
		"LOOPZE_JWT_SECRET": "s3cr3t-value-that-is-long-enough-123", "LOOPZE_METRICS_ADDR": "10.0.0.5:9090",
	}))
	require.Equal(t, "10.0.0.5:9090", c.MetricsAddr)
	require.False(t, c.Embedded())
	require.Equal(t, []string{"https://a.example", "https://b.example"}, c.AllowedOrigins)
	require.True(t, c.SecureCookies)
	require.NoError(t, c.Validate())
	require.NotContains(t, c.JWTSecret.String(), "s3cr3t")
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]map[string]string{
		"addr without port": {"LOOPZE_ADDR": "localhost"},
		"empty data dir":    {"LOOPZE_DATA_DIR": ""},
		"mysql url":         {"LOOPZE_DATABASE_URL": "mysql://x"},
		"bad url":           {"LOOPZE_DATABASE_URL": "postgres://u:p@h:port/db"},
		"log format":        {"LOOPZE_LOG_FORMAT": "xml"},
		"log level":         {"LOOPZE_LOG_LEVEL": "chatty"},
		"metrics addr":      {"LOOPZE_METRICS_ADDR": "9090"},
		"metrics on main":   {"LOOPZE_ADDR": "127.0.0.1:9000", "LOOPZE_METRICS_ADDR": "127.0.0.1:9000"},
		"pooler":            {"LOOPZE_DATABASE_URL": "postgres://u:p@h/db", "LOOPZE_DATABASE_POOLER": "statement"},
		"listen url alone":  {"LOOPZE_LISTEN_DATABASE_URL": "postgres://u:p@h/db"},
		"bad listen url":    {"LOOPZE_DATABASE_URL": "postgres://u:p@h/db", "LOOPZE_LISTEN_DATABASE_URL": "postgres://u:p@h1:port,h2/db"},
		"poll limit words":  {"LOOPZE_POLL_LIMIT_TENANT": "many"},
		"negative polls":    {"LOOPZE_POLL_LIMIT_SUBJECT": "-2"},
		"kdf memory":        {"LOOPZE_KDF_MEMORY_MIB": "16"},
		"kdf memory text":   {"LOOPZE_KDF_MEMORY_MIB": "64MiB"},
		"kdf concurrency":   {"LOOPZE_KDF_CONCURRENCY": "-2"},
		"kdf queue":         {"LOOPZE_KDF_QUEUE": "0"},
	} {
		c := config.FromEnv(env(m))
		if name == "empty data dir" {
			c.DataDir = ""
		}
		err := c.Validate()
		require.Error(t, err, name)
		require.NotContains(t, err.Error(), ":p@", name)
	}
}

// TestKeyRotateEvery: the scheduled rotation is off unless set; a duration of an hour or
// more turns it on, and anything else is a start error naming the variable.
func TestKeyRotateEvery(t *testing.T) {
	t.Parallel()
	require.Zero(t, config.FromEnv(env(nil)).KeyRotateEvery, "off by default")
	for value, want := range map[string]time.Duration{"0": 0, " 2160h ": 2160 * time.Hour, "1h": time.Hour, "90m": 90 * time.Minute} {
		c := config.FromEnv(env(map[string]string{config.EnvKeyRotateEvery: value}))
		require.NoError(t, c.Validate(), value)
		require.Equal(t, want, c.KeyRotateEvery, value)
	}
	for value, why := range map[string]string{
		"-2160h": "want a duration",
		"90d":    "want a duration", // days are not a Go duration unit
		"2160":   "want a duration",
		"soon":   "want a duration",
		"59m59s": "shorter than the minimum of 1h0m0s",
		"1ns":    "shorter than the minimum",
	} {
		c := config.FromEnv(env(map[string]string{config.EnvKeyRotateEvery: value}))
		err := c.Validate()
		require.Error(t, err, value)
		require.ErrorContains(t, err, config.EnvKeyRotateEvery+": ", value)
		require.ErrorContains(t, err, why, value)
	}
	// The flag wins over the variable and is checked the same way.
	c := config.FromEnv(env(map[string]string{config.EnvKeyRotateEvery: "2160h"}))
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"--key-rotate-every", "10m"}))
	require.ErrorContains(t, c.Validate(), "shorter than the minimum")
}

// TestMasterKeyURI: the master key is loopze.key in the data directory unless
// LOOPZE_MASTER_KEY_URI says otherwise; a file: URI must be absolute and a pkcs11: URI must
// parse, and a refusal names the variable without the PIN the URI may carry.
func TestMasterKeyURI(t *testing.T) {
	t.Parallel()
	require.Equal(t, "file:", config.FromEnv(env(nil)).MasterKeyURI)
	for _, ok := range []string{"file:", " file: ", "file:/etc/loopze/loopze.key",
		"pkcs11:token=loopze;object=master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/loopze/pin"} {
		c := config.FromEnv(env(map[string]string{"LOOPZE_MASTER_KEY_URI": ok}))
		require.NoError(t, c.Validate(), ok)
	}
	for _, bad := range []string{"file:loopze.key", "vault://s3cr3t@vault/key",
		"pkcs11:token=loopze?module-path=/m.so&pin-value=s3cr3t",
		"pkcs11:token=loopze;object=master?module-path=/m.so&pin-value=s3cr3t&pin-source=/p"} {
		c := config.FromEnv(env(map[string]string{"LOOPZE_MASTER_KEY_URI": bad}))
		err := c.Validate()
		require.ErrorContains(t, err, "LOOPZE_MASTER_KEY_URI", bad)
		require.NotContains(t, err.Error(), "s3cr3t", bad)
	}
}

// TestHighAvailabilityURLs: a multi-host URL is a valid database URL, the listen URL is the
// direct one when given, and the pooler setting defaults to detection.
func TestHighAvailabilityURLs(t *testing.T) {
	t.Parallel()
	c := config.FromEnv(env(map[string]string{
		"LOOPZE_DATABASE_URL":        "postgres://u:p@127.0.0.1:6432/loopze",
		"LOOPZE_LISTEN_DATABASE_URL": "postgres://u:p@10.0.0.1:5432,10.0.0.2:5432/loopze?target_session_attrs=read-write",
	}))
	require.NoError(t, c.Validate())
	require.Equal(t, "auto", c.DatabasePooler)
	require.Equal(t, c.ListenDatabaseURL, c.DirectDatabaseURL())
	c.ListenDatabaseURL = ""
	require.Equal(t, c.DatabaseURL, c.DirectDatabaseURL())
}

func TestHistoryRetention(t *testing.T) {
	t.Parallel()
	c := config.FromEnv(env(nil))
	require.Equal(t, 744*time.Hour, c.JWTMaxTTL, "31 days: the documented 720h runtime tokens fit")
	require.Equal(t, 20, c.HistoryKeep)
	require.Equal(t, 90, c.HistoryDays)

	c = config.FromEnv(env(map[string]string{"LOOPZE_HISTORY_KEEP": "3", "LOOPZE_HISTORY_DAYS": "7"}))
	require.Equal(t, 3, c.HistoryKeep)
	require.Equal(t, 7, c.HistoryDays)
	require.NoError(t, c.Validate())

	for _, bad := range []map[string]string{
		{"LOOPZE_HISTORY_KEEP": "0"}, {"LOOPZE_HISTORY_KEEP": "many"}, {"LOOPZE_HISTORY_KEEP": "-2"},
		{"LOOPZE_HISTORY_DAYS": "0"}, {"LOOPZE_HISTORY_DAYS": "1.5"},
		{"LOOPZE_JWT_MAX_TTL": "31 days"}, {"LOOPZE_JWT_MAX_TTL": "0s"}, {"LOOPZE_JWT_MAX_TTL": "-1h"},
	} {
		c := config.FromEnv(env(bad))
		err := c.Validate()
		require.Error(t, err, "%v", bad)
		for k := range bad {
			require.Contains(t, err.Error(), k)
		}
	}
}

// TestEveryVariableButTheSecretsHasAFlag holds the README's promise: each setting has a
// flag named after its variable that wins over it, except the two secrets.
func TestEveryVariableButTheSecretsHasAFlag(t *testing.T) {
	t.Parallel()
	c := config.FromEnv(env(map[string]string{"LOOPZE_ALLOWED_ORIGINS": "https://env.example", "LOOPZE_ADDR": "0.0.0.0:9000"}))
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.RegisterFlags(fs)
	byVariable := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if i := strings.LastIndex(f.Usage, "(LOOPZE_"); i >= 0 {
			byVariable[strings.TrimSuffix(f.Usage[i+1:], ")")] = f.Name
		}
	})
	require.Equal(t, map[string]string{
		config.EnvAddr: "addr", config.EnvDataDir: "data-dir", config.EnvDatabaseURL: "database-url",
		config.EnvLogFormat: "log-format", config.EnvLogLevel: "log-level", config.EnvFileRoots: "file-roots",
		config.EnvJWTPublicKeys: "jwt-public-keys", config.EnvJWTIssuer: "jwt-issuer", config.EnvJWTAudience: "jwt-audience",
		config.EnvJWTMaxTTL: "jwt-max-ttl", config.EnvAllowedOrigins: "allowed-origins", config.EnvSecureCookies: "secure-cookies",
		config.EnvMetricsAddr: "metrics-addr", config.EnvListenURL: "listen-database-url", config.EnvPooler: "database-pooler",
		config.EnvHistoryKeep: "history-keep", config.EnvHistoryDays: "history-days",
		config.EnvRateLimitTenant: "rate-limit-tenant", config.EnvRateLimitTenantBurst: "rate-limit-tenant-burst",
		config.EnvRateLimitSubject: "rate-limit-subject", config.EnvRateLimitSubjectBurst: "rate-limit-subject-burst",
		config.EnvPollLimitTenant: "poll-limit-tenant", config.EnvPollLimitSubject: "poll-limit-subject",
		config.EnvKDFMemory: "kdf-memory-mib", config.EnvKDFConcurrency: "kdf-concurrency", config.EnvKDFQueue: "kdf-queue",
		config.EnvKeyRotateEvery: "key-rotate-every",
	}, byVariable, "every variable but LOOPZE_JWT_SECRET, LOOPZE_METRICS_TOKEN and LOOPZE_MASTER_KEY_URI")

	require.NoError(t, fs.Parse([]string{"--allowed-origins", "https://a.example, https://b.example", "--log-level", "debug"}))
	require.Equal(t, []string{"https://a.example", "https://b.example"}, c.AllowedOrigins)
	require.Equal(t, "debug", c.LogLevel)
	require.Equal(t, "0.0.0.0:9000", c.Addr, "a variable without its flag keeps the variable's value")
}
