package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/tenantkey"
)

// pair is an inline client pair: the leaf followed by its CA, its PKCS#8 key, and the
// metadata the catalogue derives from it.
type pair struct {
	cert, key secret.PEM
	meta      material.Metadata
}

// pki is the run's certificates: one ECDSA P-256 CA (stored as a ca-bundle) and a few
// distinct client pairs it issued, repeated over the seeded entries.
type pki struct {
	ca     secret.PEM
	caMeta material.Metadata
	pairs  []pair
}

func newPKI(n int) (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "LOOPZE bench CA", Organization: []string{"LOOPZE"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &pki{ca: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	m, issues := material.Inspect(material.CABundle, p.ca, nil, material.PEMFields, now)
	if len(issues) > 0 {
		return nil, fmt.Errorf("inspect bench CA: %v", issues)
	}
	p.caMeta = m.Metadata
	for i := range n {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate client key: %w", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(100 + i)),
			Subject:      pkix.Name{CommonName: fmt.Sprintf("edge-client-%d", i), Organization: []string{"LOOPZE"}},
			DNSNames:     []string{fmt.Sprintf("edge-%d.bench.loopze.test", i)},
			NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
		if err != nil {
			return nil, fmt.Errorf("issue client certificate: %w", err)
		}
		pk, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode client key: %w", err)
		}
		cp := pair{
			cert: append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), p.ca...),
			key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
		}
		m, issues := material.Inspect(material.ClientPair, cp.cert, cp.key, material.PEMFields, now)
		if len(issues) > 0 {
			return nil, fmt.Errorf("inspect bench client pair: %v", issues)
		}
		cp.meta = m.Metadata
		p.pairs = append(p.pairs, cp)
	}
	return p, nil
}

// entryColumnsCopy are the columns the seeder writes; the rest take their defaults.
var entryColumnsCopy = []string{"tenant_id", "id", "name", "type", "source", "notes", "cert_sealed", "key_sealed",
	"key_id", "fingerprint_sha256", "subject", "issuer", "serial_number", "not_before", "not_after", "dns_names",
	"cert_count", "key_algorithm", "has_private_key"}

// seeder writes tenants and inline entries straight into the tables with COPY, sealing
// the material with the server's own master key where the catalogue seals it
// (sealing.SealPair), so the server opens them as if they had been POSTed.
type seeder struct {
	url  string
	keys *tenantkey.Keys
	pki  *pki
}

func entryID(i int) string { return fmt.Sprintf("e%06d", i) }

// clientPairRow is one inline client-pair row for COPY.
func (s *seeder) clientPairRow(ctx context.Context, tenant, id string, i int) ([]any, error) {
	p := s.pki.pairs[i%len(s.pki.pairs)]
	ring, err := s.keys.Ring(ctx, tenant)
	if err != nil {
		return nil, err
	}
	sealed, err := sealing.SealPair(ring, sealing.Place{Tenant: tenant, EntryID: id}, p.cert, p.key)
	if err != nil {
		return nil, err
	}
	m := p.meta
	return []any{tenant, id, "Edge client " + id, string(material.ClientPair), "inline", "seeded by make bench",
		sealed.Cert, sealed.Key, sealed.KeyID, m.FingerprintSHA256, m.Subject, m.Issuer, m.SerialNumber,
		m.NotBefore, m.NotAfter, m.DNSNames, m.CertCount, m.KeyAlgorithm, m.HasPrivateKey}, nil
}

// caBundleRow is one inline ca-bundle row holding the run's CA.
func (s *seeder) caBundleRow(ctx context.Context, tenant, id string) ([]any, error) {
	ring, err := s.keys.Ring(ctx, tenant)
	if err != nil {
		return nil, err
	}
	sealed, err := sealing.SealPair(ring, sealing.Place{Tenant: tenant, EntryID: id}, s.pki.ca, nil)
	if err != nil {
		return nil, err
	}
	m := s.pki.caMeta
	return []any{tenant, id, "Bench CA " + id, string(material.CABundle), "inline", "", sealed.Cert, nil,
		sealed.KeyID, m.FingerprintSHA256, m.Subject, m.Issuer, m.SerialNumber,
		m.NotBefore, m.NotAfter, m.DNSNames, m.CertCount, m.KeyAlgorithm, m.HasPrivateKey}, nil
}

// ensureTenants inserts tenant rows that do not exist yet.
func ensureTenants(ctx context.Context, conn *pgx.Conn, tenants []string) error {
	_, err := conn.Exec(ctx, `INSERT INTO tenants (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, tenants)
	if err != nil {
		return fmt.Errorf("insert tenants: %w", err)
	}
	return nil
}

// clientPairs seeds perTenant client-pair entries (e000000, e000001, ...) into each tenant,
// over workers connections at once, a COPY per tenant.
func (s *seeder) clientPairs(ctx context.Context, tenants []string, perTenant, workers int) error {
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return fmt.Errorf("connect to seed: %w", err)
	}
	err = ensureTenants(ctx, conn, tenants)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	next := make(chan string)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			errc <- s.copyWorker(ctx, next, perTenant)
		})
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
feed:
	for _, t := range tenants {
		select {
		case next <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (s *seeder) copyWorker(ctx context.Context, tenants <-chan string, perTenant int) error {
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return fmt.Errorf("connect to seed: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var failed error
	for tenant := range tenants {
		if failed != nil {
			continue // drain, so the feeder never blocks
		}
		i := 0
		var rowErr error
		src := pgx.CopyFromFunc(func() ([]any, error) {
			if i >= perTenant {
				return nil, nil
			}
			row, err := s.clientPairRow(ctx, tenant, entryID(i), i)
			i++
			if err != nil {
				rowErr = err
			}
			return row, err
		})
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"entries"}, entryColumnsCopy, src); err != nil {
			failed = fmt.Errorf("copy entries of tenant %s: %w", tenant, err)
			if rowErr != nil {
				failed = rowErr
			}
		}
	}
	return failed
}

// insertRow inserts one prepared entry row.
func insertRow(ctx context.Context, conn *pgx.Conn, row []any) error {
	_, err := conn.CopyFrom(ctx, pgx.Identifier{"entries"}, entryColumnsCopy, pgx.CopyFromRows([][]any{row}))
	if err != nil {
		return fmt.Errorf("insert entry %v of %v: %w", row[1], row[0], err)
	}
	return nil
}

// references seeds n references from deployed nodes to entry id of tenant, as a deploy
// would have stored them (the DELETE-conflict scenario).
func references(ctx context.Context, conn *pgx.Conn, tenant, id string, n int) error {
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i >= n {
			return nil, nil
		}
		row := []any{tenant, id, fmt.Sprintf("flow-%03d", i/1000), fmt.Sprintf("tcp-out-%06d", i), "tcp-out", "tls.caBundleRef"}
		i++
		return row, nil
	})
	_, err := conn.CopyFrom(ctx, pgx.Identifier{"entry_references"},
		[]string{"tenant_id", "entry_id", "flow_id", "node_id", "node_type", "field"}, src)
	if err != nil {
		return fmt.Errorf("copy references to %s: %w", id, err)
	}
	return nil
}

// analyze refreshes the planner's statistics after a bulk load, as autovacuum would soon.
func analyze(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return fmt.Errorf("vacuum analyze: %w", err)
	}
	return nil
}
