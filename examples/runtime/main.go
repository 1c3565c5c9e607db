// Command runtime is the smallest LOOPZE runtime: it opens a tenant's credentials.json with
// the tenant's runtime key (loopze-certs runtime-key writes it), and every few seconds opens a new TLS connection to a server with one
// node's config and prints the certificate it presented and the server's. Rotate the
// node's certificate files with mv (or change its entry in the store) and the next
// connection shows the new one, with no restart.
//
//	go run . -file ../../data/credentials.json -key /tmp/loopze-demo/runtime.key \
//	    -flow line-1 -node tcp-out-1 -addr 127.0.0.1:8443
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/loopze/certstore/nodetls"
)

func main() {
	file := flag.String("file", "data/credentials.json", "the tenant's credentials.json")
	key := flag.String("key", "runtime.key", "the tenant's runtime key file (loopze-certs runtime-key --tenant T --out FILE)")
	flow := flag.String("flow", "", "flow ID")
	node := flag.String("node", "", "node ID")
	addr := flag.String("addr", "", "HOST:PORT of the TLS server to dial")
	every := flag.Duration("every", 3*time.Second, "pause between connections")
	once := flag.Bool("once", false, "connect once and exit")
	flag.Parse()
	if *flow == "" || *node == "" || *addr == "" {
		log.Fatal("-flow, -node and -addr are required")
	}

	store, err := nodetls.New(nodetls.Options{File: *file, KeyFile: *key,
		OnRefused: func(err error) { log.Printf("new credentials file refused, still serving the last good one: %v", err) }})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	for {
		if err := connect(ctx, store, *flow, *node, *addr); err != nil {
			log.Print(err)
			if *once {
				os.Exit(1)
			}
		}
		if *once {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(*every):
		}
	}
}

// connect is one connection init: a fresh config, a handshake, a report.
func connect(ctx context.Context, store *nodetls.Store, flow, node, addr string) error {
	cfg, err := store.Config(ctx, flow, node)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var presented string
	if get := cfg.GetClientCertificate; get != nil {
		cfg.GetClientCertificate = func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := get(info)
			if err == nil && c.Leaf != nil {
				presented = c.Leaf.Subject.String() + " " + short(c.Leaf.Raw)
			}
			return c, err
		}
	}
	d := tls.Dialer{Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	cs := c.(*tls.Conn).ConnectionState()
	peer := cs.PeerCertificates[0]
	fmt.Printf("%s generation %d: %s, server %s %s, presented %s\n", time.Now().Format(time.TimeOnly),
		store.Generation(), tls.VersionName(cs.Version), peer.Subject, short(peer.Raw), presented)
	return nil
}

// short is the start of a certificate's SHA-256 fingerprint.
func short(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:6])
}
