package envelope

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"

	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/secret"
)

// KeySize is the length of a master key and of a data key: AES-256.
const KeySize = 32

// KeyFile is the master key's file name inside the data directory.
const KeyFile = "loopze.key"

// NextKeyFile is written beside KeyFile by a master-key rotation before any row changes.
// While it exists it holds the current key, and KeyFile's key stays loaded for opening.
const NextKeyFile = "loopze.key.next"

// keyFileMode is the only mode a key file is written with; looser modes on disk are warned
// about when the file is read.
const keyFileMode fs.FileMode = 0o600

// maxKeyFileSize bounds how much of a key file is read. A correct file is 45 bytes; the
// bound keeps a wrong path (a log, a device) from being slurped into memory.
const maxKeyFileSize = 4096

// keyEncoding is the textual form of a key file. Strict refuses non-zero padding bits, so a
// key has exactly one spelling and an edited file cannot silently decode to the same key.
var keyEncoding = base64.StdEncoding.Strict()

// GenerateKey returns a fresh random master key.
func GenerateKey() (secret.Bytes, error) {
	key := make(secret.Bytes, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	return key, nil
}

// KeyIDOf derives a key's ID: the first 8 bytes of its SHA-256, as 16 lowercase hex
// characters. The ID names the key in blobs, database columns and logs without revealing it.
func KeyIDOf(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:keyIDSize])
}

// ReadKeyFile reads and decodes a master key file. A malformed file (empty, not base64, not
// 32 bytes) is an error wrapping ErrBadKeyFile that names the path and never the contents; a
// missing file wraps fs.ErrNotExist.
func ReadKeyFile(path string) (secret.Bytes, error) {
	key, _, err := readKeyFile(path)
	return key, err
}

// ReadKeyFileMode is ReadKeyFile that also returns the file's permission bits, taken from
// the open file, so a caller refusing a key others may read (TooOpen) checks the mode of
// the very bytes it loads even if the path is swapped meanwhile.
func ReadKeyFileMode(path string) (secret.Bytes, fs.FileMode, error) {
	return readKeyFile(path)
}

// readKeyFile also returns the file's mode, taken from the open file so the mode checked is
// the mode of the bytes read even if the path is swapped meanwhile.
func readKeyFile(path string) (secret.Bytes, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read master key: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("read master key: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%w %s: not a regular file", ErrBadKeyFile, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	defer clear(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("read master key %s: %w", path, err)
	}
	if len(raw) > maxKeyFileSize {
		return nil, 0, fmt.Errorf("%w %s: larger than %d bytes", ErrBadKeyFile, path, maxKeyFileSize)
	}
	key, err := parseKey(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("%w %s: %w", ErrBadKeyFile, path, err)
	}
	return key, info.Mode().Perm(), nil
}

// parseKey decodes a key file's contents. Its errors describe the defect only: they must
// never quote the input, which is (almost) a key.
func parseKey(raw []byte) (secret.Bytes, error) {
	text := bytes.TrimSpace(raw)
	if len(text) == 0 {
		return nil, errors.New("empty (want base64 of 32 random bytes)")
	}
	key := make(secret.Bytes, keyEncoding.DecodedLen(len(text)))
	n, err := keyEncoding.Decode(key, text)
	if err != nil {
		clear(key)
		return nil, errors.New("not valid base64 (want base64 of 32 random bytes)")
	}
	if n != KeySize {
		clear(key)
		return nil, fmt.Errorf("decodes to %d bytes, want %d", n, KeySize)
	}
	return key[:n], nil
}

// WriteKeyFile writes key to path as base64 plus a newline, mode 0600, atomically and
// durably: the bytes go to a synced temp file in the same directory, which is then hard
// linked to path. Linking fails rather than replaces when path exists, so of two processes
// creating a key at once exactly one wins, and a reader never sees a partial file. An
// existing path is an error wrapping fs.ErrExist.
func WriteKeyFile(path string, key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("write master key %s: key is %d bytes, want %d", path, len(key), KeySize)
	}
	text := make([]byte, keyEncoding.EncodedLen(len(key))+1)
	defer clear(text)
	keyEncoding.Encode(text, key)
	text[len(text)-1] = '\n'
	if err := durable.CreateExclusive(path, text, durable.Mode(keyFileMode)); err != nil {
		return fmt.Errorf("write master key: %w", err)
	}
	return nil
}

// TooOpen reports whether a key file's mode grants anything to group or others. Windows
// modes say nothing about that, so there it is always false.
func TooOpen(mode fs.FileMode) bool {
	return runtime.GOOS != "windows" && mode&0o077 != 0
}
