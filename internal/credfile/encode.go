package credfile

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// EncodeEntry is e's element of a document's entries array. The export job keeps these
// encodings across exports and assembles documents from them (EncodeDocument).
func EncodeEntry(e Entry) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode entry %s: %w", e.ID, err)
	}
	return b, nil
}

// NewNodeCredential is a node's credential as a document holds it: the value as text when
// it is UTF-8, else its base64 (EncodingBase64).
func NewNodeCredential(nodeID, name string, value []byte) NodeCredential {
	c := NodeCredential{NodeID: nodeID, Name: name}
	if utf8.Valid(value) {
		c.Value = string(value)
	} else {
		c.Value, c.Encoding = base64.StdEncoding.EncodeToString(value), EncodingBase64
	}
	return c
}

// EncodeNodeCredential is c's element of a document's nodeCredentials array.
func EncodeNodeCredential(c NodeCredential) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode node %s credential %s: %w", c.NodeID, c.Name, err)
	}
	return b, nil
}

// Encoded is a document in its JSON form, in clear, ready to Seal. Release (or Seal) clears
// it.
type Encoded struct {
	Tenant     string
	Generation int64
	// Counts of what it holds, for reports.
	Entries, References, NodeCredentials int

	plain []byte
}

// bufPool recycles the buffers documents are assembled in; they are cleared before reuse.
// A buffer larger than maxPooledBuffer is left to the GC: a pooled buffer stays live until
// two collections passed, and one large tenant's document (20 MiB for 10,000 pairs) would
// otherwise double the heap the GC paces itself on.
var bufPool sync.Pool

const maxPooledBuffer = 4 << 20

// EncodeDocument assembles a document from its elements' encodings (EncodeEntry,
// EncodeNodeCredential): exactly what json.Marshal of the Document they stand for writes
// (TestEncodeDocumentMatchesMarshal), without encoding an unchanged element again.
func EncodeDocument(tenant string, gen int64, exportedAt time.Time, auditHead *AuditHead, entries [][]byte,
	workspace json.RawMessage, refs []Reference, creds [][]byte) (*Encoded, error) {
	head, err := json.Marshal(struct {
		Tenant     string     `json:"tenant"`
		Generation int64      `json:"generation"`
		ExportedAt time.Time  `json:"exportedAt"`
		AuditHead  *AuditHead `json:"auditHead,omitempty"`
	}{tenant, gen, exportedAt, auditHead})
	if err != nil {
		return nil, err
	}
	var ws []byte
	if len(workspace) > 0 {
		if ws, err = json.Marshal(workspace); err != nil {
			return nil, fmt.Errorf("encode workspace: %w", err)
		}
	}
	if refs == nil {
		refs = []Reference{}
	}
	rb, err := json.Marshal(refs)
	if err != nil {
		return nil, fmt.Errorf("encode references: %w", err)
	}
	size := len(head) + len(ws) + len(rb) + 64
	for _, e := range entries {
		size += len(e) + 1
	}
	for _, c := range creds {
		size += len(c) + 1
	}
	var buf *bytes.Buffer
	if b, ok := bufPool.Get().(*bytes.Buffer); ok {
		buf = b
	} else {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	buf.Grow(size)
	buf.Write(head[:len(head)-1])
	buf.WriteString(`,"entries":[`)
	for i, e := range entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(e)
	}
	buf.WriteByte(']')
	if ws != nil {
		buf.WriteString(`,"workspace":`)
		buf.Write(ws)
	}
	buf.WriteString(`,"references":`)
	buf.Write(rb)
	buf.WriteString(`,"nodeCredentials":[`)
	for i, c := range creds {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(c)
	}
	buf.WriteString("]}")
	return &Encoded{Tenant: tenant, Generation: gen, plain: buf.Bytes(),
		Entries: len(entries), References: len(refs), NodeCredentials: len(creds)}, nil
}

// Release clears the document's clear bytes and returns its buffer for reuse; once.
func (d *Encoded) Release() {
	if d.plain == nil {
		return
	}
	clear(d.plain[:cap(d.plain)])
	if cap(d.plain) <= maxPooledBuffer {
		bufPool.Put(bytes.NewBuffer(d.plain[:0]))
	}
	d.plain = nil
}
