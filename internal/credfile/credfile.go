// Package credfile is the credentials.json file format: a small authenticated header, then a
// tenant's entries with their material, its workspace, references and node credentials,
// sealed whole with AES-256-GCM under the master key. It encodes, seals, opens and reads
// the header of a file, and knows nothing of where the data comes from: the server's export
// job (internal/fileexport) writes files, and the runtime side (nodetls) reads them, so
// this package links nothing of the server.
//
// The decrypted document holds PEM and private keys. Its types print a summary only, so a
// document that reaches a log line or an error leaks nothing.
package credfile

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
)

// DefaultTenant is the tenant whose file is data/credentials.json.
const DefaultTenant = "default"

// FileName is the name of every tenant's file.
const FileName = "credentials.json"

// TenantsDir holds the files of the tenants other than DefaultTenant, one directory each.
const TenantsDir = "tenants"

// Format identifies the file; Version is the only version written and read.
const (
	Format  = sealing.FileFormat
	Version = 1
	// Cipher names the whole-file encryption in the header, for people reading it.
	Cipher = "AES-256-GCM"
)

// Sentinel errors callers branch on.
var (
	// ErrNotCredentialsFile means the bytes are not a credentials file of a known version,
	// or its header is damaged.
	ErrNotCredentialsFile = errors.New("not a LOOPZE credentials file")
	// ErrWrongTenant means the file belongs to another tenant than the one asked for.
	ErrWrongTenant = errors.New("credentials file belongs to another tenant")
)

// Path returns the file of tenant inside dataDir.
func Path(dataDir, tenant string) string {
	if tenant == DefaultTenant {
		return filepath.Join(dataDir, FileName)
	}
	return filepath.Join(dataDir, TenantsDir, tenant, FileName)
}

// Header is the clear part of a file. Every field is authenticated: changing any of them
// makes the file fail to decrypt.
type Header struct {
	Format     string `json:"format"`
	Version    int    `json:"version"`
	Tenant     string `json:"tenant"`
	Generation int64  `json:"generation"`
	KeyID      string `json:"keyId"`
	Cipher     string `json:"cipher"`
}

// file is the whole file: the header fields, then the sealed document.
type file struct {
	Header
	// Ciphertext is base64 (standard, padded) of nonce (12) || ciphertext || tag (16).
	Ciphertext string `json:"ciphertext"`
}

// AAD returns the header bytes authenticated with the ciphertext (besides the key ID,
// which the envelope binds itself): "loopze-credentials/v1", NUL, tenant, NUL, generation
// in decimal. docs/credentials-format.md describes the exact bytes.
func (h Header) AAD() []byte { return sealing.File(h.Version, h.Tenant, h.Generation) }

func (h Header) check() error {
	if h.Format != Format {
		return fmt.Errorf("%w: format is not %q", ErrNotCredentialsFile, Format)
	}
	if h.Version != Version {
		return fmt.Errorf("%w: unsupported version %d", ErrNotCredentialsFile, h.Version)
	}
	if h.Tenant == "" || h.KeyID == "" || h.Generation < 0 {
		return fmt.Errorf("%w: header lacks tenant, key ID or generation", ErrNotCredentialsFile)
	}
	return nil
}

// Document is the decrypted content of a file: everything needed to restore the tenant.
type Document struct {
	Tenant          string           `json:"tenant"`
	Generation      int64            `json:"generation"`
	ExportedAt      time.Time        `json:"exportedAt"`
	Entries         []Entry          `json:"entries"`
	Workspace       json.RawMessage  `json:"workspace,omitempty"`
	References      []Reference      `json:"references"`
	NodeCredentials []NodeCredential `json:"nodeCredentials"`
}

// Entry is one catalogue entry with its material in clear: PEM for inline entries, paths
// for file-sourced ones. Metadata is what the database held when the file was written.
type Entry struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Source   string `json:"source"`
	Notes    string `json:"notes"`
	CertPEM  string `json:"certPem,omitempty"`
	KeyPEM   string `json:"keyPem,omitempty"`
	CertPath string `json:"certPath,omitempty"`
	KeyPath  string `json:"keyPath,omitempty"`
	material.Metadata
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// PassphraseFile is a file entry's passphrase file (its path, never the passphrase).
	PassphraseFile string `json:"passphraseFile,omitempty"`
}

// Reference is one deployed node field naming an entry.
type Reference struct {
	EntryID  string `json:"entryId"`
	FlowID   string `json:"flowId"`
	NodeID   string `json:"nodeId"`
	NodeType string `json:"nodeType"`
	Field    string `json:"field"`
}

// NodeCredential is one secret of a node, in clear. Value is the text itself, or its
// base64 when Encoding is "base64" (a value that is not UTF-8).
type NodeCredential struct {
	NodeID   string `json:"nodeId"`
	Name     string `json:"name"`
	Value    string `json:"value"`
	Encoding string `json:"encoding,omitempty"`
}

// EncodingBase64 marks a NodeCredential whose Value is base64.
const EncodingBase64 = "base64"

// Bytes returns the credential's value as stored.
func (c NodeCredential) Bytes() ([]byte, error) {
	if c.Encoding == EncodingBase64 {
		b, err := base64.StdEncoding.DecodeString(c.Value)
		if err != nil {
			return nil, fmt.Errorf("node %s credential %s: value is not base64", c.NodeID, c.Name)
		}
		return b, nil
	}
	if c.Encoding != "" {
		return nil, fmt.Errorf("node %s credential %s: unknown encoding", c.NodeID, c.Name)
	}
	return []byte(c.Value), nil
}

// summary is what a document prints as: counts only.
func (d *Document) summary() string {
	if d == nil {
		return "credfile.Document(nil)"
	}
	return fmt.Sprintf("credfile.Document{tenant: %s, generation: %d, entries: %d, references: %d, nodeCredentials: %d}",
		d.Tenant, d.Generation, len(d.Entries), len(d.References), len(d.NodeCredentials))
}

// String implements fmt.Stringer with counts only: the document holds keys.
func (d *Document) String() string { return d.summary() }

// GoString implements fmt.GoStringer.
func (d *Document) GoString() string { return d.summary() }

// Format implements fmt.Formatter, so no verb reaches the material.
func (d *Document) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, d.summary()) }

// LogValue implements slog.LogValuer.
func (d *Document) LogValue() slog.Value { return slog.StringValue(d.summary()) }

// Format implements fmt.Formatter: an entry prints its ID only.
func (e Entry) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, "credfile.Entry{id: "+e.ID+"}")
}

// LogValue implements slog.LogValuer.
func (e Entry) LogValue() slog.Value { return slog.StringValue("entry " + e.ID) }

// Format implements fmt.Formatter: a credential prints where it lives, never its value.
func (c NodeCredential) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, "credfile.NodeCredential{node: "+c.NodeID+", name: "+c.Name+", value: "+secret.Redacted+"}")
}

// LogValue implements slog.LogValuer.
func (c NodeCredential) LogValue() slog.Value {
	return slog.StringValue("node " + c.NodeID + " credential " + c.Name)
}

// Seal encrypts doc under ring's current key and returns the file's bytes and header.
// doc.Tenant and doc.Generation go into the header. It encodes doc with the encoder the
// export job uses (EncodeDocument), element by element.
func Seal(ring *envelope.Ring, doc *Document) ([]byte, Header, error) {
	entries := make([][]byte, len(doc.Entries))
	for i, e := range doc.Entries {
		b, err := EncodeEntry(e)
		if err != nil {
			return nil, Header{}, err
		}
		entries[i] = b
	}
	creds := make([][]byte, len(doc.NodeCredentials))
	for i, c := range doc.NodeCredentials {
		b, err := EncodeNodeCredential(c)
		if err != nil {
			return nil, Header{}, err
		}
		creds[i] = b
	}
	enc, err := EncodeDocument(doc.Tenant, doc.Generation, doc.ExportedAt, entries, doc.Workspace, doc.References, creds)
	for _, b := range entries {
		clear(b)
	}
	for _, b := range creds {
		clear(b)
	}
	if err != nil {
		return nil, Header{}, fmt.Errorf("encode credentials of %s: %w", doc.Tenant, err)
	}
	return enc.Seal(ring)
}

// Seal encrypts the encoded document under ring's current key and returns the file's bytes
// and header. The document in clear is released once sealed, before the file's bytes are
// made: sealing holds at most two copies of a tenant's document at once (sealed, and the
// sealed in base64), not three.
func (d *Encoded) Seal(ring *envelope.Ring) ([]byte, Header, error) {
	h := Header{Format: Format, Version: Version, Tenant: d.Tenant, Generation: d.Generation, Cipher: Cipher}
	keyID, sealed, err := ring.SealWithCurrent(d.plain, h.AAD())
	d.Release()
	if err != nil {
		return nil, Header{}, fmt.Errorf("seal credentials of %s: %w", h.Tenant, err)
	}
	h.KeyID = keyID
	out, err := encodeFile(h, sealed)
	if err != nil {
		return nil, Header{}, fmt.Errorf("encode credentials file of %s: %w", h.Tenant, err)
	}
	return out, h, nil
}

// encodeFile writes what json.MarshalIndent(file{...}, "", "  ") writes, without making the
// indenter scan megabytes of base64: only the small header goes through encoding/json, and
// base64's alphabet needs no JSON escaping.
func encodeFile(h Header, sealed []byte) ([]byte, error) {
	hb, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return nil, err
	}
	hb = bytes.TrimSuffix(hb, []byte("\n}"))
	enc := base64.StdEncoding
	out := make([]byte, 0, len(hb)+enc.EncodedLen(len(sealed))+32)
	out = append(out, hb...)
	out = append(out, ",\n  \"ciphertext\": \""...)
	out = enc.AppendEncode(out, sealed)
	return append(out, "\"\n}\n"...), nil
}

// ParseHeader reads a file's header without decrypting anything. It copies nothing of the
// ciphertext, which is most of a file (megabytes for a large tenant): the runtimes' sync,
// the credentials route and the export read headers often.
func ParseHeader(data []byte) (Header, error) {
	var h Header
	if err := json.Unmarshal(data, &h); err != nil {
		return Header{}, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
	}
	if err := h.check(); err != nil {
		return Header{}, err
	}
	return h, nil
}

// maxHeaderBytes bounds what ReadHeader reads: a header is a few hundred bytes.
const maxHeaderBytes = 64 << 10

// ReadHeader reads a file's header from r, positioned at the file's start, and stops at the
// ciphertext, which every file Seal writes puts after the header: the runtimes' route
// serves files of megabytes from an open descriptor and reads only this much of them. A
// file whose header fields do not all come before the ciphertext is ErrNotCredentialsFile.
func ReadHeader(r io.Reader) (Header, error) {
	dec := json.NewDecoder(io.LimitReader(r, maxHeaderBytes))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Header{}, fmt.Errorf("%w: not a JSON object", ErrNotCredentialsFile)
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return Header{}, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
		}
		if key == "ciphertext" {
			break
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return Header{}, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
		}
		fields[key] = v
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return Header{}, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
	}
	return ParseHeader(b)
}

func parseFile(data []byte) (file, error) {
	var f file
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		// The decoder's message may quote a fragment of the input; the input is not secret
		// (it is ciphertext or a stray file) but is kept out anyway.
		return file{}, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
	}
	if err := f.check(); err != nil {
		return file{}, err
	}
	return f, nil
}

// Open decrypts a file's bytes with ring and returns its document. The header must name
// tenant (ErrWrongTenant otherwise); an empty tenant accepts any. Errors wrap
// envelope.ErrUnknownKey when ring lacks the file's key, envelope.ErrDecrypt when the file
// was altered, and ErrNotCredentialsFile when it is not a credentials file at all.
func Open(ring *envelope.Ring, data []byte, tenant string) (*Document, Header, error) {
	f, err := parseFile(data)
	if err != nil {
		return nil, Header{}, err
	}
	if tenant != "" && f.Tenant != tenant {
		return nil, f.Header, fmt.Errorf("%w: it is %s's, not %s's", ErrWrongTenant, f.Tenant, tenant)
	}
	sealed, err := base64.StdEncoding.DecodeString(f.Ciphertext)
	if err != nil {
		return nil, f.Header, fmt.Errorf("%w: ciphertext is not base64", ErrNotCredentialsFile)
	}
	plain, err := ring.OpenWith(f.KeyID, sealed, f.Header.AAD())
	if err != nil {
		return nil, f.Header, fmt.Errorf("decrypt credentials of %s: %w", f.Tenant, err)
	}
	defer clear(plain)
	var doc Document
	if err := json.Unmarshal(plain, &doc); err != nil {
		return nil, f.Header, fmt.Errorf("%w: decrypted document is not valid JSON", ErrNotCredentialsFile)
	}
	if doc.Tenant != f.Tenant || doc.Generation != f.Generation {
		// Cannot happen to a file this package wrote: the header is authenticated.
		return nil, f.Header, fmt.Errorf("%w: document and header disagree", ErrNotCredentialsFile)
	}
	return &doc, f.Header, nil
}
