package credfile

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/loopze/certstore/internal/material"
	"github.com/stretchr/testify/require"
)

// The document assembled from cached elements is byte for byte what json.Marshal writes,
// so files stay version 1 whatever the cache held.
func TestEncodeDocumentMatchesMarshal(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)
	entries := []Entry{
		{ID: "a", Name: "<b>&\u2028", Type: "client-pair", Source: "inline", CertPEM: "-----BEGIN CERTIFICATE-----\nAA==\n", KeyPEM: "k",
			Metadata: material.Metadata{DNSNames: []string{"x.example"}, NotBefore: at, NotAfter: at, HasPrivateKey: true}, CreatedAt: at, UpdatedAt: at},
		{ID: "b", Type: "ca-bundle", Source: "file", CertPath: "/etc/x.pem", Metadata: material.Metadata{DNSNames: []string{}}},
	}
	creds := []NodeCredential{{NodeID: "n1", Name: "password", Value: "s\"3<"}, NewNodeCredential("n2", "blob", []byte{0, 0xff})}
	refs := []Reference{{EntryID: "a", FlowID: "f", NodeID: "n1", NodeType: "tcp-out", Field: "tls.caBundleRef"}}
	for name, ws := range map[string]json.RawMessage{
		"workspace": json.RawMessage("{ \"flows\" : [ {\"id\": \"<f>\"} ] }"),
		"none":      nil,
	} {
		t.Run(name, func(t *testing.T) {
			for _, n := range []int{0, 1, 2} {
				doc := &Document{Tenant: "acme", Generation: 42, ExportedAt: at, Entries: entries[:n], Workspace: ws,
					References: refs[:min(n, 1)], NodeCredentials: creds[:n]}
				if n > 0 {
					doc.AuditHead = &AuditHead{Seq: int64(n), MAC: "00ff", KeyVersion: n - 1}
				}
				want, err := json.Marshal(doc)
				require.NoError(t, err)
				var encEntries, encCreds [][]byte
				for i := range n {
					e, err := EncodeEntry(entries[i])
					require.NoError(t, err)
					c, err := EncodeNodeCredential(creds[i])
					require.NoError(t, err)
					encEntries, encCreds = append(encEntries, e), append(encCreds, c)
				}
				got, err := EncodeDocument("acme", 42, at, doc.AuditHead, encEntries, ws, doc.References, encCreds)
				require.NoError(t, err)
				require.Equal(t, string(want), string(got.plain))
				got.Release()
			}
		})
	}
}
