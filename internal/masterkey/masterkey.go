// Package masterkey owns the master key: the one key of a server that wraps and unwraps
// tenant keys, and nothing else. It lives where LOOPZE_MASTER_KEY_URI says: in a file
// (loopze.key in the data directory, or handed over by systemd as an encrypted credential),
// or in a PKCS#11 token, where it never leaves the token and every wrap and unwrap runs
// inside it.
//
// A Keyring holds the current key and the older ones still needed to unwrap during a
// rotation; every Key names itself by an ID stable for its material, never by its bytes.
// A wrapped value is AES-256-GCM: a random 96-bit IV, the ciphertext and a 128-bit tag,
// bound to the caller's additional data.
package masterkey

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/loopze/certstore/internal/envelope"
)

// Sentinel errors callers branch on.
var (
	// ErrUnwrap means a wrapped value did not authenticate: it was altered, truncated, made
	// under another key, or bound to other additional data.
	ErrUnwrap = errors.New("unwrap: message authentication failed")
	// ErrCurrent means a rotation step would leave the keyring without a current key.
	ErrCurrent = errors.New("the current master key cannot be retired")
	// ErrReadOnly means the keyring cannot change the store the key lives in: a systemd
	// credential, or a PKCS#11 URI pinning one key by its id.
	ErrReadOnly = errors.New("master key store is read-only")
	// ErrClosed means the keyring was closed.
	ErrClosed = errors.New("master keyring is closed")
	// ErrNoPKCS11 means the binary was built without cgo, and so without PKCS#11.
	ErrNoPKCS11 = errors.New("this binary was built without PKCS#11 support (CGO_ENABLED=0); use a build with cgo, or a file: master key")
	// ErrModule means the PKCS#11 module could not be loaded or initialised.
	ErrModule = errors.New("PKCS#11 module")
	// ErrLogin means the token refused the PIN, or the PIN could not be read.
	ErrLogin = errors.New("PKCS#11 login")
	// ErrNoToken means no token, or more than one, matches the URI.
	ErrNoToken = errors.New("PKCS#11 token")
	// ErrNoKey means the token holds no usable AES key with the URI's label.
	ErrNoKey = errors.New("PKCS#11 key object")
)

// Key is one master key: it wraps and unwraps tenant keys bound to aad, and never hands out
// its own bytes. It is safe for concurrent use.
type Key interface {
	// ID is 16 lowercase hex characters, stable for the key's material.
	ID() string
	// Wrap seals plaintext (1 to MaxWrap bytes) under the key, bound to aad:
	// IV (12 bytes, random) || ciphertext || tag (16 bytes).
	Wrap(plaintext, aad []byte) ([]byte, error)
	// Unwrap opens what Wrap returned under the same aad; a value that does not
	// authenticate is an error wrapping ErrUnwrap.
	Unwrap(wrapped, aad []byte) ([]byte, error)
}

// Keyring is the master keys a server holds: the current one, which wraps, and older ones
// kept for unwrapping during a rotation. It is safe for concurrent use.
//
// A rotation is three steps, each crash-safe and each safe to run again:
//
//  1. Next adds a new key where the ring lives (loopze.key.next beside loopze.key, or a
//     new object in the token with the next CKA_ID). The newest key is the current one as
//     soon as it exists, for this process and for any process that loads the store, so
//     every replica agrees on which key wraps. While an older key is still in the store a
//     rotation is under way, and Next returns the key it already made.
//  2. The caller rewraps what it holds under the current key, and other processes Reload
//     to find a key they did not know.
//  3. Retire forgets an older key once nothing is wrapped under it: loopze.key.next is
//     renamed over loopze.key, or the token object is destroyed.
type Keyring interface {
	// Current is the key new values are wrapped under.
	Current() Key
	// Get returns the key with this ID, current or older.
	Get(id string) (Key, bool)
	// IDs lists the IDs of every key held, sorted.
	IDs() []string
	// Next makes the key a rotation moves to, or returns it when a rotation is already
	// under way, and makes it current.
	Next() (Key, error)
	// Retire forgets an older key in the store and in the ring. The current key is
	// ErrCurrent; an ID the ring does not hold is not an error.
	Retire(id string) error
	// Reload reads the store again, so a key another process added becomes known. Keys
	// already held stay until retired; on error the ring is unchanged.
	Reload() error
	// Close releases the ring's sessions; keys of a closed ring fail with ErrClosed.
	Close() error
}

// Wrapped values: a 96-bit IV, then the ciphertext and a 128-bit tag.
const (
	// KeySize is the size of a master key: AES-256.
	KeySize = envelope.KeySize
	// IVSize is the size of the IV at the head of a wrapped value.
	IVSize = envelope.KeyWrapIVSize
	// TagSize is the size of the GCM tag at its tail.
	TagSize = envelope.KeyWrapTagSize
	// Overhead is how many bytes Wrap adds to its plaintext.
	Overhead = IVSize + TagSize
	// MaxWrap bounds what Wrap seals: tenant keys, not data. The bound keeps the master
	// key's GCM invocations to key wrapping, however a caller errs.
	MaxWrap = envelope.MaxKeyWrap
)

// Domain labels prefix the additional data of every GCM call under a master key, so a
// wrap, a key check value and the envelope's own uses of the same file key (its labels
// begin "loopze/envelope/") can never be taken for one another.
const (
	labelWrap  = envelope.KeyWrapLabel
	labelKeyID = "loopze/masterkey/v1/key-id\x00"
)

// wrapAAD is the additional data of a wrap bound to the caller's aad.
func wrapAAD(aad []byte) []byte { return envelope.KeyWrapAAD(aad) }

// checkWrap refuses what Wrap must not seal.
func checkWrap(plaintext []byte) error {
	if len(plaintext) == 0 || len(plaintext) > MaxWrap {
		return fmt.Errorf("wrap: %d bytes, want 1 to %d", len(plaintext), MaxWrap)
	}
	return nil
}

// zeroIV reports an all-zero IV: the key check value's IV, which a wrap never uses.
func zeroIV(iv []byte) bool { return envelope.ZeroIV(iv) }

// Kind says which store a URI names.
type Kind string

// The stores.
const (
	KindFile   Kind = "file"
	KindPKCS11 Kind = "pkcs11"
)

// CredentialsEnv is the variable systemd sets to the directory of a unit's credentials
// (LoadCredential=, LoadCredentialEncrypted=).
const CredentialsEnv = "CREDENTIALS_DIRECTORY"

// Source is where a URI puts the master key, found without opening it.
type Source struct {
	// Kind is the store.
	Kind Kind
	// Path is the key file (KindFile): loopze.key in the data directory, the file the URI
	// names, or the systemd credential when Credential is set.
	Path string
	// NextPath is where Next writes the key a rotation moves to: beside Path, or in the
	// data directory when Path is a credential.
	NextPath string
	// Credential reports a key read from $CREDENTIALS_DIRECTORY, which is read-only.
	Credential bool
	// PKCS11 is the parsed URI (KindPKCS11).
	PKCS11 *PKCS11URI
}

// CheckURI checks uri's syntax without touching the file system: empty, "file:",
// "file:/absolute/path" or a pkcs11: URI that parses. Errors wrap ErrBadURI and quote no PIN.
func CheckURI(uri string) error {
	_, _, err := parseURI(uri)
	return err
}

// parseURI returns the key file a file: URI names ("" for the default) or the parsed
// pkcs11: URI.
func parseURI(uri string) (path string, u *PKCS11URI, err error) {
	if uri == "" {
		return "", nil, nil
	}
	if len(uri) >= len(SchemePKCS11) && strings.EqualFold(uri[:len(SchemePKCS11)], SchemePKCS11) {
		u, err := ParsePKCS11URI(uri)
		return "", u, err
	}
	rest, ok := strings.CutPrefix(uri, SchemeFile)
	if !ok {
		return "", nil, fmt.Errorf("%w: %s: want %s or %s", ErrBadURI, Redact(uri), SchemeFile, SchemePKCS11)
	}
	if after, ok := strings.CutPrefix(rest, "//"); ok {
		if !strings.HasPrefix(after, "/") {
			return "", nil, fmt.Errorf("%w: %s names another host; want file:/absolute/path", ErrBadURI, uri)
		}
		rest = after
	}
	if rest != "" && !filepath.IsAbs(rest) {
		return "", nil, fmt.Errorf("%w: %s: want file: alone or file:/absolute/path", ErrBadURI, uri)
	}
	if rest == "" {
		return "", nil, nil
	}
	return filepath.Clean(rest), nil, nil
}

// Locate says where uri puts the master key. An empty uri is "file:". "file:" alone is
// loopze.key in dataDir, unless systemd passed a credential named loopze.key
// ($CREDENTIALS_DIRECTORY, read through getenv), which is then used; "file:/abs/path" is
// that file. A pkcs11: URI is parsed (RFC 7512). Errors wrap ErrBadURI and quote no PIN.
func Locate(uri, dataDir string, getenv func(string) string) (Source, error) {
	path, u, err := parseURI(uri)
	if err != nil {
		return Source{}, err
	}
	if u != nil {
		return Source{Kind: KindPKCS11, PKCS11: u}, nil
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	cred, err := credential(getenv)
	if err != nil {
		return Source{}, err
	}
	if path != "" {
		if cred != "" {
			return Source{}, fmt.Errorf("%w: %s names a key file, and systemd passes a credential %s too; "+
				"use file: alone to read the credential, or drop the credential", ErrBadURI, uri, cred)
		}
		return Source{Kind: KindFile, Path: path, NextPath: path + nextSuffix}, nil
	}
	next := filepath.Join(dataDir, envelope.NextKeyFile)
	if cred != "" {
		return Source{Kind: KindFile, Path: cred, NextPath: next, Credential: true}, nil
	}
	return Source{Kind: KindFile, Path: filepath.Join(dataDir, envelope.KeyFile), NextPath: next}, nil
}

// nextSuffix names the next key beside the current one, as loopze.key.next beside loopze.key.
const nextSuffix = ".next"

// credential returns the path of the loopze.key credential systemd passed, or "".
func credential(getenv func(string) string) (string, error) {
	dir := getenv(CredentialsEnv)
	if dir == "" {
		return "", nil
	}
	p := filepath.Join(dir, envelope.KeyFile)
	switch _, err := os.Stat(p); {
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("systemd credential %s: %w", p, err)
	}
	return p, nil
}

// Open opens the keyring uri names (see Locate). A file keyring creates loopze.key on first
// boot, as the envelope's Load does, except in a credential, which it only reads. A PKCS#11
// keyring loads the module, logs in and finds the key objects; a missing module, a wrong
// PIN, a missing token or object is one line naming the URI without its PIN, wrapping
// ErrModule, ErrLogin, ErrNoToken or ErrNoKey. getenv supplies CREDENTIALS_DIRECTORY; a nil
// logger discards.
func Open(uri, dataDir string, getenv func(string) string, logger *slog.Logger) (Keyring, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	src, err := Locate(uri, dataDir, getenv)
	if err != nil {
		return nil, fmt.Errorf("open master key: %w", err)
	}
	if src.Kind == KindPKCS11 {
		r, err := openPKCS11(src.PKCS11, getenv, logger)
		if err != nil {
			return nil, fmt.Errorf("open master key %s: %w", src.PKCS11, err)
		}
		return r, nil
	}
	r, err := openFile(src, dataDir, logger)
	if err != nil {
		return nil, fmt.Errorf("open master key: %w", err)
	}
	return r, nil
}
