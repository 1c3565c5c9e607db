package nodetls_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/nodetls"
)

// exampleDir writes what a runtime holds: the credentials.json the server exports for
// tenant default (or that Sync keeps), and the tenant's runtime key, runtime.key, which
// `loopze-certs runtime-key --tenant default --out runtime.key` writes on the server. The
// file's workspace has one node referencing a CA bundle.
func exampleDir() string {
	dir, err := os.MkdirTemp("", "nodetls-example-")
	if err != nil {
		log.Fatal(err)
	}
	// What the server holds: its master key and the tenant's key, wrapped under it.
	master, root := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(master)
	_, _ = rand.Read(root)
	block, _ := aes.NewCipher(master)
	aead, _ := cipher.NewGCM(block)
	wrapped, err := envelope.WrapKey(aead, root, sealing.TenantKeyWrap("default", 1))
	if err != nil {
		log.Fatal(err)
	}
	fileKey, err := sealing.DeriveTenantKey(root, sealing.PurposeFile, "default", 1)
	if err != nil {
		log.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	doc := &credfile.Document{Tenant: "default", Generation: 7,
		Entries: []credfile.Entry{{ID: "internal-root-ca", Type: "ca-bundle", Source: "inline",
			CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}},
		Workspace: []byte(`{"flows":[{"id":"ingest-line-1","nodes":[
			{"id":"mqtt-out-3","type":"mqtt-broker","tls":{"caBundleRef":"internal-root-ca","serverName":"broker.example"}}]}]}`)}
	data, _, err := credfile.Seal(credfile.FileKey{Key: fileKey, TenantKey: credfile.TenantKeyRef{Version: 1,
		MasterKeyID: envelope.KeyIDOf(master), Wrapped: base64.StdEncoding.EncodeToString(wrapped)}}, doc)
	if err != nil {
		log.Fatal(err)
	}
	if err := durable.Replace(filepath.Join(dir, "credentials.json"), data); err != nil {
		log.Fatal(err)
	}
	runtimeKey, err := (&credfile.RuntimeKey{Tenant: "default", Keys: map[int]secret.Bytes{1: fileKey}}).Marshal()
	if err != nil {
		log.Fatal(err)
	}
	if err := durable.Replace(filepath.Join(dir, "runtime.key"), runtimeKey); err != nil {
		log.Fatal(err)
	}
	return dir
}

func ExampleStore_Config() {
	dir := exampleDir()
	defer os.RemoveAll(dir)

	store, err := nodetls.Open(filepath.Join(dir, "credentials.json"), filepath.Join(dir, "runtime.key"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// At every connection init: the config of node mqtt-out-3 in flow ingest-line-1.
	cfg, err := store.Config(context.Background(), "ingest-line-1", "mqtt-out-3")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tenant", store.Tenant(), "generation", store.Generation())
	fmt.Println("server name", cfg.ServerName, "verified against the CA bundle:", cfg.RootCAs != nil)

	_, err = store.Config(context.Background(), "ingest-line-1", "no-such-node")
	fmt.Println(errors.Is(err, nodetls.ErrNodeNotFound))
	// Output:
	// tenant default generation 7
	// server name broker.example verified against the CA bundle: true
	// true
}

func ExampleStore_Err() {
	dir := exampleDir()
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "credentials.json")

	store, err := nodetls.New(nodetls.Options{File: path, KeyFile: filepath.Join(dir, "runtime.key"),
		OnRefused: func(err error) { fmt.Println("refused:", errors.Is(err, nodetls.ErrNotCredentialsFile)) }})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// A torn file replaces the good one: refused, and the last good snapshot keeps serving.
	if err := os.WriteFile(path+".new", []byte(`{"format": "loopze-cred`), 0o600); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		log.Fatal(err)
	}
	_, err = store.Config(context.Background(), "ingest-line-1", "mqtt-out-3")
	fmt.Println("config:", err, "- generation", store.Generation())
	fmt.Println("file on disk is not served:", store.Err() != nil)
	// Output:
	// refused: true
	// config: <nil> - generation 7
	// file on disk is not served: true
}

func ExampleSync() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	// Keeps /var/lib/loopze/credentials.json current from the server until ctx ends; the
	// token comes from `loopze-certs token --tenant default --role runtime`.
	go func() {
		if err := nodetls.Sync(ctx, "https://certs.example:8080", os.Getenv("LOOPZE_RUNTIME_TOKEN"), "/var/lib/loopze"); err != nil {
			log.Print(err)
		}
	}()
}

func ExampleSyncer_loopbackHTTP() {
	dir := exampleDir()
	defer os.RemoveAll(dir)
	file, err := os.ReadFile(filepath.Join(dir, "credentials.json"))
	if err != nil {
		log.Fatal(err)
	}
	// A store on this machine, reached over plain http on the loopback interface.
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(file) }))
	defer server.Close()
	local, err := os.MkdirTemp("", "nodetls-sync-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(local)

	s := &nodetls.Syncer{BaseURL: server.URL, Token: os.Getenv("LOOPZE_RUNTIME_TOKEN"), Dir: local}
	_, err = s.Once(context.Background())
	fmt.Println("plain http refused:", errors.Is(err, nodetls.ErrInsecureURL))

	// Opting in allows plain http to a loopback host, and to nothing else.
	s.AllowLoopbackHTTP = true
	written, err := s.Once(context.Background())
	fmt.Println("written:", written, err)
	s.BaseURL = "http://certs.example:8080"
	_, err = s.Once(context.Background())
	fmt.Println("other hosts still refused:", errors.Is(err, nodetls.ErrInsecureURL))
	// Output:
	// plain http refused: true
	// written: true <nil>
	// other hosts still refused: true
}
