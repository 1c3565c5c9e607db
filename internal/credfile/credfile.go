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
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
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

// Format identifies the file. Version is the format written: 2, sealed under the file key
// of the tenant's own key, which the header carries wrapped under the master key. Version 1
// files, sealed under the master key itself, are still read.
const (
	Format   = sealing.FileFormat
	Version  = 2
	Version1 = 1
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
	// KeyID names the key that sealed the file: the file key of a tenant key version
	// (version 2), or a master key (version 1).
	KeyID string `json:"keyId"`
	// TenantKey (version 2) is the tenant key version the file key derives from, wrapped
	// under the master key it names: what the master key alone needs to open the file.
	TenantKey *TenantKeyRef `json:"tenantKey,omitempty"`
	Cipher    string        `json:"cipher"`
}

// TenantKeyRef is a tenant key version as a file's header carries it: wrapped (base64)
// under the master key MasterKeyID, bound to the tenant and version
// (sealing.TenantKeyWrap).
type TenantKeyRef struct {
	Version     int    `json:"version"`
	MasterKeyID string `json:"masterKeyId"`
	Wrapped     string `json:"wrapped"`
}

// file is the whole file: the header fields, then the sealed document.
type file struct {
	Header
	// Ciphertext is base64 (standard, padded) of nonce (12) || ciphertext || tag (16).
	Ciphertext string `json:"ciphertext"`
}

// AAD returns the header bytes authenticated with the ciphertext. Version 1: the format and
// version, tenant and generation (the envelope binds the key ID itself). Version 2: those,
// the key ID and the tenant key reference too. docs/credentials-format.md gives the bytes.
func (h Header) AAD() []byte {
	if h.Version == Version1 || h.TenantKey == nil {
		return sealing.File(h.Version, h.Tenant, h.Generation)
	}
	return sealing.FileWithKey(h.Version, h.Tenant, h.Generation, h.KeyID,
		h.TenantKey.Version, h.TenantKey.MasterKeyID, h.TenantKey.Wrapped)
}

func (h Header) check() error {
	if h.Format != Format {
		return fmt.Errorf("%w: format is not %q", ErrNotCredentialsFile, Format)
	}
	switch {
	case h.Version == Version1:
	case h.Version == Version && h.TenantKey != nil && h.TenantKey.Version > 0 && h.TenantKey.MasterKeyID != "" && h.TenantKey.Wrapped != "":
	case h.Version == Version:
		return fmt.Errorf("%w: header lacks its tenant key", ErrNotCredentialsFile)
	default:
		return fmt.Errorf("%w: unsupported version %d", ErrNotCredentialsFile, h.Version)
	}
	if h.Tenant == "" || h.KeyID == "" || h.Generation < 0 {
		return fmt.Errorf("%w: header lacks tenant, key ID or generation", ErrNotCredentialsFile)
	}
	return nil
}

// Document is the decrypted content of a file: everything needed to restore the tenant.
type Document struct {
	Tenant     string    `json:"tenant"`
	Generation int64     `json:"generation"`
	ExportedAt time.Time `json:"exportedAt"`
	// AuditHead is the head of the tenant's audit trail when the file was written: a
	// checkpoint of the trail outside the database, which `loopze-certs audit verify`
	// checks the trail against. Absent while the trail is empty.
	AuditHead       *AuditHead       `json:"auditHead,omitempty"`
	Entries         []Entry          `json:"entries"`
	Workspace       json.RawMessage  `json:"workspace,omitempty"`
	References      []Reference      `json:"references"`
	NodeCredentials []NodeCredential `json:"nodeCredentials"`
}

// AuditHead is the last record of a tenant's audit trail: its sequence number, its chain
// MAC (hex; a SHA-256 hash for a record chained before audit keys) and the version of the
// audit key that chained it (0: none).
type AuditHead struct {
	Seq        int64  `json:"seq"`
	MAC        string `json:"mac"`
	KeyVersion int    `json:"keyVersion"`
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

// FileKey seals a tenant's version 2 files: the file key of a tenant key version, and that
// version as the header carries it (wrapped under the master key).
type FileKey struct {
	Key       secret.Bytes
	TenantKey TenantKeyRef
}

// ID names a file key in a header: the first 8 bytes of its SHA-256, hex.
func (k FileKey) ID() string { return envelope.KeyIDOf(k.Key) }

// Seal encrypts doc under k and returns the file's bytes and header. doc.Tenant and
// doc.Generation go into the header. It encodes doc with the encoder the export job uses
// (EncodeDocument), element by element.
func Seal(k FileKey, doc *Document) ([]byte, Header, error) {
	enc, err := encode(doc)
	if err != nil {
		return nil, Header{}, err
	}
	return enc.Seal(k)
}

// encode is doc through EncodeDocument.
func encode(doc *Document) (*Encoded, error) {
	entries := make([][]byte, len(doc.Entries))
	for i, e := range doc.Entries {
		b, err := EncodeEntry(e)
		if err != nil {
			return nil, err
		}
		entries[i] = b
	}
	creds := make([][]byte, len(doc.NodeCredentials))
	for i, c := range doc.NodeCredentials {
		b, err := EncodeNodeCredential(c)
		if err != nil {
			return nil, err
		}
		creds[i] = b
	}
	enc, err := EncodeDocument(doc.Tenant, doc.Generation, doc.ExportedAt, doc.AuditHead, entries, doc.Workspace, doc.References, creds)
	for _, b := range entries {
		clear(b)
	}
	for _, b := range creds {
		clear(b)
	}
	if err != nil {
		return nil, fmt.Errorf("encode credentials of %s: %w", doc.Tenant, err)
	}
	return enc, nil
}

// Seal encrypts the encoded document under k (AES-256-GCM, a random nonce) and returns the
// file's bytes and header. The document in clear is released once sealed, before the
// file's bytes are made: sealing holds at most two copies of a tenant's document at once
// (sealed, and the sealed in base64), not three.
func (d *Encoded) Seal(k FileKey) ([]byte, Header, error) {
	defer d.Release()
	ref := k.TenantKey
	h := Header{Format: Format, Version: Version, Tenant: d.Tenant, Generation: d.Generation, KeyID: k.ID(),
		TenantKey: &ref, Cipher: Cipher}
	aead, err := fileAEAD(k.Key)
	if err != nil {
		return nil, Header{}, fmt.Errorf("seal credentials of %s: %w", h.Tenant, err)
	}
	sealed := make([]byte, aead.NonceSize(), aead.NonceSize()+len(d.plain)+aead.Overhead())
	if _, err := rand.Read(sealed); err != nil {
		return nil, Header{}, fmt.Errorf("seal credentials of %s: nonce: %w", h.Tenant, err)
	}
	sealed = aead.Seal(sealed, sealed, d.plain, h.AAD())
	d.Release()
	out, err := encodeFile(h, sealed)
	if err != nil {
		return nil, Header{}, fmt.Errorf("encode credentials file of %s: %w", h.Tenant, err)
	}
	return out, h, nil
}

func fileAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != sealing.TenantKeySize {
		return nil, fmt.Errorf("a file key is %d bytes, want %d", len(key), sealing.TenantKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
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
	h, _, err := readHeader(r)
	return h, err
}

// readHeader is ReadHeader; it also returns where in r the "ciphertext" key ends (0 when
// the file has none), which is where Reseal finds the sealed document.
func readHeader(r io.Reader) (Header, int64, error) {
	dec := json.NewDecoder(io.LimitReader(r, maxHeaderBytes))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Header{}, 0, fmt.Errorf("%w: not a JSON object", ErrNotCredentialsFile)
	}
	fields := map[string]json.RawMessage{}
	var ciphertextAt int64
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return Header{}, 0, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
		}
		if key == "ciphertext" {
			ciphertextAt = dec.InputOffset()
			break
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return Header{}, 0, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
		}
		fields[key] = v
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return Header{}, 0, fmt.Errorf("%w: not valid JSON", ErrNotCredentialsFile)
	}
	h, err := ParseHeader(b)
	return h, ciphertextAt, err
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

// Keys are what open files.
type Keys struct {
	// Ring holds master keys from files (loopze.key): it opens version 1 files, sealed
	// under a master key, and version 2 files by unwrapping the tenant key their header
	// carries. Nil when the opener holds no master key (a runtime key only).
	Ring *envelope.Ring
	// FileKey, when set, returns the file key a version 2 header names: from a runtime
	// key file, or through a master key the Ring does not hold (one in a token). An error
	// wrapping envelope.ErrUnknownKey lets Ring try.
	FileKey func(h Header) (secret.Bytes, error)
}

// fileKey is the key that opens the version 2 file whose header is h.
func (k Keys) fileKey(h Header) (secret.Bytes, error) {
	var errs []error
	if k.FileKey != nil {
		fk, err := k.FileKey(h)
		if err == nil {
			return fk, nil
		}
		if !errors.Is(err, envelope.ErrUnknownKey) {
			return nil, err
		}
		errs = append(errs, err)
	}
	if k.Ring != nil {
		ref := h.TenantKey
		wrapped, err := base64.StdEncoding.DecodeString(ref.Wrapped)
		if err != nil {
			return nil, fmt.Errorf("%w: the wrapped tenant key is not base64", ErrNotCredentialsFile)
		}
		root, err := k.Ring.UnwrapKey(ref.MasterKeyID, wrapped, sealing.TenantKeyWrap(h.Tenant, ref.Version))
		if err == nil {
			defer clear(root)
			return sealing.DeriveTenantKey(root, sealing.PurposeFile, h.Tenant, ref.Version)
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("the file is sealed under version %d of %s's key (file key %s), and no key to open it was given: %w",
			h.TenantKey.Version, h.Tenant, h.KeyID, envelope.ErrUnknownKey)
	}
	return nil, errors.Join(errs...)
}

// Open decrypts a file's bytes with keys and returns its document. The header must name
// tenant (ErrWrongTenant otherwise); an empty tenant accepts any. Errors wrap
// envelope.ErrUnknownKey when keys lack the file's key (the message says which),
// envelope.ErrDecrypt when the file was altered, and ErrNotCredentialsFile when it is not a
// credentials file at all.
func Open(keys Keys, data []byte, tenant string) (*Document, Header, error) {
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
	var plain []byte
	switch f.Version {
	case Version1:
		if keys.Ring == nil {
			return nil, f.Header, fmt.Errorf("decrypt credentials of %s: a version 1 file opens with the master key (loopze.key) only: %w",
				f.Tenant, envelope.ErrUnknownKey)
		}
		plain, err = keys.Ring.OpenWith(f.KeyID, sealed, f.Header.AAD())
	default:
		var fk secret.Bytes
		if fk, err = keys.fileKey(f.Header); err != nil {
			return nil, f.Header, fmt.Errorf("decrypt credentials of %s: %w", f.Tenant, err)
		}
		plain, err = openFile(fk, f.Header, sealed)
		clear(fk)
	}
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

// openFile opens a version 2 file's sealed bytes under its file key.
func openFile(fk []byte, h Header, sealed []byte) ([]byte, error) {
	if envelope.KeyIDOf(fk) != h.KeyID {
		return nil, fmt.Errorf("the file key %s is not the %s the header names: %w", envelope.KeyIDOf(fk), h.KeyID, envelope.ErrUnknownKey)
	}
	aead, err := fileAEAD(fk)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: the sealed document is truncated", envelope.ErrMalformed)
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], h.AAD())
	if err != nil {
		return nil, envelope.ErrDecrypt
	}
	return plain, nil
}
