// Package metrics exposes the service's Prometheus metrics at /metrics: HTTP request
// durations by operation, the database pool's figures, the export job's lag per tenant,
// and the expiry (notAfter) of every catalogue entry, so that "alert before a certificate
// expires" is one rule. Public is the part that names no tenant or entry, for a /metrics
// nobody guards. File-sourced entries are re-read, so a rotation on disk shows up
// without an API call; the expiry figures are cached briefly so frequent scrapes of a
// large catalogue stay cheap.
package metrics

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
)

// DefaultExpiryTTL is how long the expiry figures are reused between scrapes.
const DefaultExpiryTTL = 30 * time.Second

// Options are what the collectors read.
type Options struct {
	// Pool is the database pool: its figures, and the entries' expiry. Nil leaves both out.
	Pool *pgxpool.Pool
	// Exporter reports the export job's state; nil leaves the export metrics out.
	Exporter *fileexport.Exporter
	// Roots confines the re-read of file-sourced material, as for the API.
	Roots material.Roots
	// KDF admits the key derivations of re-reading a PKCS#12 file entry, charged to its
	// tenant; nil derives at once.
	KDF material.Budget
	// Logger receives collection errors.
	Logger *slog.Logger
	// ExpiryTTL is how long expiry figures are cached; DefaultExpiryTTL when zero.
	ExpiryTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Version is the build's version, for loopze_build_info.
	Version string
}

// Metrics is the registry and the /metrics handler.
type Metrics struct {
	reg     *prometheus.Registry
	httpDur *prometheus.HistogramVec
	handler http.Handler
	public  http.Handler
}

// New builds the registry with every collector Options allow.
func New(o Options) *Metrics {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ExpiryTTL <= 0 {
		o.ExpiryTTL = DefaultExpiryTTL
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		httpDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loopze_http_request_duration_seconds",
			Help:    "Duration of HTTP requests, by operation (OpenAPI operation ID, or route), method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"operation", "method", "code"}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "loopze_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": cmp.Or(o.Version, "dev"), "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.httpDur, buildInfo, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if o.Pool != nil {
		reg.MustRegister(&poolCollector{pool: o.Pool})
		reg.MustRegister(&expiryCollector{o: o})
	}
	if o.Exporter != nil {
		reg.MustRegister(&exportCollector{x: o.Exporter, now: o.Now})
	}
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{o.Logger}})
	// The public registry holds the series no one could learn a tenant, an entry or the
	// API's traffic from: the build and the Go process.
	pub := prometheus.NewRegistry()
	pub.MustRegister(buildInfo, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.public = promhttp.HandlerFor(pub, promhttp.HandlerOpts{ErrorLog: slogErrorLog{o.Logger}})
	return m
}

// ServeHTTP serves every metric in the Prometheus text format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

// Public serves only the build and Go process series: no tenant, entry, operation or pool
// figure. It is what /metrics shows on a listener anyone may reach without a token.
func (m *Metrics) Public() http.Handler { return m.public }

// ObserveHTTP records one request's duration.
func (m *Metrics) ObserveHTTP(operation, method string, status int, d time.Duration) {
	m.httpDur.WithLabelValues(operation, method, strconv.Itoa(status)).Observe(d.Seconds())
}

// Registry is the underlying registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// slogErrorLog adapts the logger to promhttp's error log.
type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) {
	s.l.Error("metrics collection", "err", fmt.Sprint(v...))
}

// poolCollector reads pgxpool's statistics at scrape time.
type poolCollector struct{ pool *pgxpool.Pool }

var (
	poolGauges = map[string]*prometheus.Desc{
		"acquired": prometheus.NewDesc("loopze_db_pool_acquired_connections", "Connections in use.", nil, nil),
		"idle":     prometheus.NewDesc("loopze_db_pool_idle_connections", "Idle connections.", nil, nil),
		"total":    prometheus.NewDesc("loopze_db_pool_total_connections", "Open connections (acquired, idle and being built).", nil, nil),
		"max":      prometheus.NewDesc("loopze_db_pool_max_connections", "Largest the pool may grow.", nil, nil),
	}
	poolAcquires     = prometheus.NewDesc("loopze_db_pool_acquires_total", "Connections acquired from the pool.", nil, nil)
	poolEmptyAcquire = prometheus.NewDesc("loopze_db_pool_empty_acquires_total", "Acquires that had to wait for a connection.", nil, nil)
	poolCanceled     = prometheus.NewDesc("loopze_db_pool_canceled_acquires_total", "Acquires cancelled while waiting.", nil, nil)
	poolWait         = prometheus.NewDesc("loopze_db_pool_acquire_wait_seconds_total", "Time spent acquiring connections.", nil, nil)
	poolNewConns     = prometheus.NewDesc("loopze_db_pool_new_connections_total", "Connections opened.", nil, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range poolGauges {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{poolAcquires, poolEmptyAcquire, poolCanceled, poolWait, poolNewConns} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolGauges["acquired"], prometheus.GaugeValue, float64(s.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(poolGauges["idle"], prometheus.GaugeValue, float64(s.IdleConns()))
	ch <- prometheus.MustNewConstMetric(poolGauges["total"], prometheus.GaugeValue, float64(s.TotalConns()))
	ch <- prometheus.MustNewConstMetric(poolGauges["max"], prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(poolAcquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolEmptyAcquire, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolCanceled, prometheus.CounterValue, float64(s.CanceledAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWait, prometheus.CounterValue, s.AcquireDuration().Seconds())
	ch <- prometheus.MustNewConstMetric(poolNewConns, prometheus.CounterValue, float64(s.NewConnsCount()))
}

// exportCollector reports the export job's state per tenant.
type exportCollector struct {
	x   *fileexport.Exporter
	now func() time.Time
}

var (
	exportLag = prometheus.NewDesc("loopze_export_lag_seconds",
		"How long the oldest change not yet in the tenant's credentials.json has waited; 0 when the file is current.", []string{"tenant"}, nil)
	exportGen = prometheus.NewDesc("loopze_export_file_generation",
		"Generation of the tenant's credentials.json as last written or checked.", []string{"tenant"}, nil)
	exportLastWrite = prometheus.NewDesc("loopze_export_last_write_timestamp_seconds",
		"When the tenant's credentials.json was last written by this process.", []string{"tenant"}, nil)
	exportWrites = prometheus.NewDesc("loopze_export_writes_total",
		"Credentials files written for the tenant.", []string{"tenant"}, nil)
	exportErrors = prometheus.NewDesc("loopze_export_errors_total",
		"Exports of the tenant that failed.", []string{"tenant"}, nil)
)

func (c *exportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{exportLag, exportGen, exportLastWrite, exportWrites, exportErrors} {
		ch <- d
	}
}

func (c *exportCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for _, s := range c.x.Status() {
		lag := 0.0
		if !s.PendingSince.IsZero() {
			lag = max(now.Sub(s.PendingSince).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(exportLag, prometheus.GaugeValue, lag, s.Tenant)
		ch <- prometheus.MustNewConstMetric(exportGen, prometheus.GaugeValue, float64(s.FileGeneration), s.Tenant)
		if !s.LastWrite.IsZero() {
			ch <- prometheus.MustNewConstMetric(exportLastWrite, prometheus.GaugeValue, float64(s.LastWrite.UnixMilli())/1000, s.Tenant)
		}
		ch <- prometheus.MustNewConstMetric(exportWrites, prometheus.CounterValue, float64(s.Writes), s.Tenant)
		ch <- prometheus.MustNewConstMetric(exportErrors, prometheus.CounterValue, float64(s.Errors), s.Tenant)
	}
}

// expiryCollector reports every entry's notAfter, from per-tenant snapshots. A tenant's
// snapshot is taken again when the tenant's generation has moved (any write of its
// catalogue), so a new or changed entry shows at the next scrape; otherwise it is reused
// for the TTL, which bounds how stale a re-read of file-sourced material can be.
type expiryCollector struct {
	o Options

	mu      sync.Mutex
	tenants map[string]*tenantExpiry
	last    []*tenantExpiry // what the last scrape reported, reused when a refresh fails
}

// tenantExpiry is one tenant's snapshot and the generation it was taken at.
type tenantExpiry struct {
	generation int64
	taken      time.Time
	samples    []expirySample
	fileErr    []expirySample
}

type expirySample struct {
	tenant, id, typ, source string
	notAfter                time.Time
}

var (
	certNotAfter = prometheus.NewDesc("loopze_cert_not_after_seconds",
		"notAfter of the entry's leaf certificate, as a Unix timestamp. File-sourced entries are re-read from disk.",
		[]string{"tenant", "id", "type", "source"}, nil)
	certFileUnreadable = prometheus.NewDesc("loopze_cert_file_unreadable",
		"1 for a file-sourced entry whose certificate file cannot be read or parsed now (its stored notAfter is reported).",
		[]string{"tenant", "id"}, nil)
)

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- certNotAfter
	ch <- certFileUnreadable
}

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock() // one refresh at a time; concurrent scrapes reuse its result
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	snaps, err := c.refresh(ctx, c.o.Now())
	cancel()
	if err != nil {
		c.o.Logger.Error("collect certificate expiry", "err", err)
		snaps = c.last
	}
	c.last = snaps
	for _, t := range snaps {
		for _, s := range t.samples {
			ch <- prometheus.MustNewConstMetric(certNotAfter, prometheus.GaugeValue,
				float64(s.notAfter.Unix()), s.tenant, s.id, s.typ, s.source)
		}
		for _, s := range t.fileErr {
			ch <- prometheus.MustNewConstMetric(certFileUnreadable, prometheus.GaugeValue, 1, s.tenant, s.id)
		}
	}
}

// refresh brings every tenant's snapshot up to date: one query for the tenants and their
// generations, then one per tenant whose generation moved or whose snapshot is older than
// the TTL.
func (c *expiryCollector) refresh(ctx context.Context, now time.Time) ([]*tenantExpiry, error) {
	tenants, err := repo.ListTenants(ctx, c.o.Pool)
	if err != nil {
		return nil, err
	}
	next := make(map[string]*tenantExpiry, len(tenants))
	out := make([]*tenantExpiry, 0, len(tenants))
	for _, t := range tenants {
		snap := c.tenants[t.ID]
		if snap == nil || snap.generation != t.Generation || now.Sub(snap.taken) >= c.o.ExpiryTTL {
			if snap, err = c.refreshTenant(ctx, t, now); err != nil {
				return nil, err
			}
		}
		next[t.ID] = snap
		out = append(out, snap)
	}
	c.tenants = next
	return out, nil
}

func (c *expiryCollector) refreshTenant(ctx context.Context, t repo.Tenant, now time.Time) (*tenantExpiry, error) {
	var rows []repo.ExpiryRow
	err := db.InTenant(ctx, c.o.Pool, t.ID, func(tx pgx.Tx) error {
		var err error
		rows, err = repo.ListExpiry(ctx, tx, t.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	snap := &tenantExpiry{generation: t.Generation, taken: now, samples: make([]expirySample, 0, len(rows))}
	for _, r := range rows {
		s := expirySample{tenant: t.ID, id: r.ID, typ: r.Type, source: r.Source, notAfter: r.NotAfter}
		if r.Source == "file" {
			na, ok, err := c.leafNotAfter(ctx, t.ID, r)
			switch {
			case err != nil:
				// Its key derivations could not run now: the stored figure stands, and the
				// file is not unreadable for that.
			case ok:
				s.notAfter = na
			default:
				snap.fileErr = append(snap.fileErr, s)
			}
		}
		snap.samples = append(snap.samples, s)
	}
	return snap, nil
}

// leafNotAfter reads a certificate file and returns its first certificate's notAfter; ok
// is false for a file that cannot be read or parsed, err (material.ErrNotAdmitted) says
// it was not read now.
func (c *expiryCollector) leafNotAfter(ctx context.Context, tenant string, r repo.ExpiryRow) (time.Time, bool, error) {
	data, err := c.o.Roots.ReadFile(tenant, r.CertPath)
	if err != nil {
		return time.Time{}, false, nil
	}
	if pemText, p12 := material.DetectFile(data); p12 {
		// A PKCS#12 file is opened with its passphrase file; it carries the key too.
		m, issues, err := c.o.Roots.LoadFilesWith(ctx, material.Kind(r.Type), tenant,
			material.Paths{Cert: r.CertPath, Passphrase: r.PassphrasePath}, material.PathFields, time.Now(), c.o.KDF)
		if err != nil || len(issues) > 0 {
			return time.Time{}, false, err
		}
		return m.Metadata.NotAfter, true, nil
	} else if !pemText {
		certs, err := x509.ParseCertificates(data)
		if err != nil || len(certs) == 0 {
			return time.Time{}, false, nil
		}
		return certs[0].NotAfter, true, nil
	}
	for rest := []byte(data); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return time.Time{}, false, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return time.Time{}, false, nil
		}
		return cert.NotAfter, true, nil
	}
}
