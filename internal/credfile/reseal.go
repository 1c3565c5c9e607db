package credfile

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/loopze/certstore/internal/envelope"
)

// Reseal returns the version 2 file data sealed again under k, whose file key is the one
// that sealed it and whose header differs only in how the tenant key is wrapped: what a
// master key rotation changes in a file whose document did not change. The document is
// neither decoded nor encoded again. The header is authenticated with the ciphertext
// (Header.AAD binds the wrapped tenant key), so the sealed document is opened and the same
// bytes sealed under the new header with a new nonce; they are sealed in place, so no
// copy of the document in clear outlives the call.
//
// A file under another file key or version of the tenant key is envelope.ErrUnknownKey; a
// version 1 file, or one not laid out as Seal writes it (the header, then the ciphertext,
// then nothing), is ErrNotCredentialsFile; a ciphertext that does not open is
// envelope.ErrDecrypt or envelope.ErrMalformed. The caller encodes the document anew then.
func Reseal(k FileKey, data []byte) ([]byte, Header, error) {
	h, at, err := readHeader(bytes.NewReader(data))
	if err != nil {
		return nil, Header{}, err
	}
	if h.Version != Version {
		return nil, Header{}, fmt.Errorf("%w: a version %d file is not sealed again as it is", ErrNotCredentialsFile, h.Version)
	}
	if h.KeyID != k.ID() || h.TenantKey.Version != k.TenantKey.Version {
		return nil, Header{}, fmt.Errorf("reseal credentials of %s: the file is sealed under file key %s (tenant key version %d), not %s (version %d): %w",
			h.Tenant, h.KeyID, h.TenantKey.Version, k.ID(), k.TenantKey.Version, envelope.ErrUnknownKey)
	}
	text, err := ciphertextText(data, at)
	if err != nil {
		return nil, Header{}, err
	}
	sealed := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(sealed, text)
	if err != nil {
		return nil, Header{}, fmt.Errorf("%w: ciphertext is not base64", ErrNotCredentialsFile)
	}
	sealed = sealed[:n]
	defer clear(sealed)
	aead, err := fileAEAD(k.Key)
	if err != nil {
		return nil, Header{}, fmt.Errorf("reseal credentials of %s: %w", h.Tenant, err)
	}
	ns := aead.NonceSize()
	if len(sealed) < ns+aead.Overhead() {
		return nil, Header{}, fmt.Errorf("%w: the sealed document is truncated", envelope.ErrMalformed)
	}
	plain, err := aead.Open(sealed[ns:ns], sealed[:ns], sealed[ns:], h.AAD())
	if err != nil {
		return nil, Header{}, fmt.Errorf("reseal credentials of %s: %w", h.Tenant, envelope.ErrDecrypt)
	}
	ref := k.TenantKey
	h.TenantKey, h.Cipher = &ref, Cipher
	if _, err := rand.Read(sealed[:ns]); err != nil {
		return nil, Header{}, fmt.Errorf("reseal credentials of %s: nonce: %w", h.Tenant, err)
	}
	ct := aead.Seal(plain[:0], sealed[:ns], plain, h.AAD())
	out, err := encodeFile(h, sealed[:ns+len(ct)])
	if err != nil {
		return nil, Header{}, fmt.Errorf("encode credentials file of %s: %w", h.Tenant, err)
	}
	return out, h, nil
}

// ciphertextText is the base64 text of the ciphertext whose key ends at offset at of data,
// found without running megabytes of base64 through a JSON decoder: base64 needs no
// escapes, so the string ends at the next quote, and only the object's end may follow it.
func ciphertextText(data []byte, at int64) ([]byte, error) {
	bad := fmt.Errorf("%w: the ciphertext is not the file's last field", ErrNotCredentialsFile)
	if at <= 0 || at > int64(len(data)) {
		return nil, bad
	}
	const space = " \t\r\n"
	rest := bytes.TrimLeft(data[at:], space)
	if len(rest) == 0 || rest[0] != ':' {
		return nil, bad
	}
	rest = bytes.TrimLeft(rest[1:], space)
	if len(rest) == 0 || rest[0] != '"' {
		return nil, bad
	}
	rest = rest[1:]
	end := bytes.IndexByte(rest, '"')
	if end < 0 || !bytes.Equal(bytes.Trim(rest[end+1:], space), []byte("}")) {
		return nil, bad
	}
	return rest[:end], nil
}
