package nodetls

import (
	"errors"
	"fmt"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/resolver"
)

// Errors callers test with errors.Is. Every error of this package names what it was doing
// and where (file, flow, node, field), never PEM, keys or file contents.
var (
	// ErrClosed is returned by every call on a Store after Close.
	ErrClosed = errors.New("nodetls: store is closed")

	// ErrNodeNotFound means the deployed workspace in the file has no such flow or node.
	ErrNodeNotFound = errors.New("no such flow or node in the deployed workspace")
	// ErrNoTLS means the node exists but configures no TLS at all.
	ErrNoTLS = errors.New("node has no tls block")
	// ErrUnresolved wraps every failure to turn a tls block into material: a missing or
	// wrong-type reference, an unreadable file, PEM that does not parse, halves of a pair
	// that do not match.
	ErrUnresolved = resolver.ErrUnresolved
	// ErrEntryNotFound means a reference names no entry of the tenant's certificate store
	// (it is also ErrUnresolved).
	ErrEntryNotFound = errors.New("no such certificate-store entry")
	// ErrWrongType means a reference names an entry of another type than the field needs,
	// such as a caBundleRef naming a client-pair (it is also ErrUnresolved).
	ErrWrongType = errors.New("certificate-store entry has the wrong type")

	// ErrNotCredentialsFile means the file is not a whole LOOPZE credentials file: torn,
	// truncated, empty, or something else entirely.
	ErrNotCredentialsFile = errors.New("not a LOOPZE credentials file")
	// ErrTampered means the file does not authenticate under its key: a byte was changed.
	ErrTampered = errors.New("credentials file does not authenticate (altered or damaged)")
	// ErrWrongTenant means the file belongs to another tenant than the one loaded first
	// (or asked for in Options.Tenant).
	ErrWrongTenant = errors.New("credentials file belongs to another tenant")
	// ErrUnknownKey means the file is sealed under a key the key file does not hold: a
	// tenant key version the runtime key does not have yet (the message names the version
	// the file needs and those the runtime key holds: give the runtime its new runtime
	// key), or a master key neither loopze.key nor loopze.key.next holds.
	ErrUnknownKey = errors.New("credentials file is sealed under a key this runtime does not hold")
	// ErrStaleFile means the file's generation is older than one already accepted: the
	// one loaded, or the generation floor recorded beside the file (credentials.json.floor),
	// which outlives restarts. Sync refuses to write such a file too.
	ErrStaleFile = errors.New("credentials file is older than one already accepted")
	// ErrFileMissing means the credentials file cannot be read at all.
	ErrFileMissing = errors.New("credentials file cannot be read")
	// ErrTooLarge means the file is larger than MaxFileSize. It is refused from its size,
	// before it is read.
	ErrTooLarge = errors.New("credentials file is larger than the limit (MaxFileSize)")

	// ErrInsecureURL means Sync was given a base URL other than https://, which would send
	// the token and the file in clear; plain http:// is allowed only to a loopback host
	// and only with Syncer.AllowLoopbackHTTP. Sync stops at once: asking again cannot help.
	ErrInsecureURL = errors.New("credentials sync needs an https:// URL")
)

// fileError maps what internal/credfile and internal/envelope say about a file onto the
// sentinels above, keeping the cause in the chain.
func fileError(path string, err error) error {
	var kind error
	switch {
	case errors.Is(err, credfile.ErrWrongTenant):
		kind = ErrWrongTenant
	case errors.Is(err, envelope.ErrUnknownKey):
		kind = ErrUnknownKey
	case errors.Is(err, envelope.ErrDecrypt), errors.Is(err, envelope.ErrMalformed), errors.Is(err, envelope.ErrKeyUnwrap):
		kind = ErrTampered
	case errors.Is(err, credfile.ErrNotCredentialsFile):
		kind = ErrNotCredentialsFile
	default:
		return fmt.Errorf("load %s: %w", path, err)
	}
	return fmt.Errorf("load %s: %w: %w", path, kind, err)
}
