package auth

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/secret"
)

// SecretFileName is the generated HS256 secret's name inside the data directory.
const SecretFileName = "jwt.secret"

// MinHMACSecretLen is the shortest HS256 secret accepted, in bytes. RFC 7518 section 3.2
// requires a key at least as long as the hash output.
const MinHMACSecretLen = 32

// ErrWeakSecret is returned when an HS256 secret is shorter than MinHMACSecretLen.
var ErrWeakSecret = fmt.Errorf("HS256 secret shorter than %d bytes", MinHMACSecretLen)

// LoadHMACSecret returns the HS256 secret: envValue's bytes when it is set (the value of
// LOOPZE_JWT_SECRET), otherwise the content of <dataDir>/jwt.secret, creating that file
// with base64 of 32 random bytes and mode 0600 on first boot.
//
// The secret is the file's text (trimmed), not the decoded bytes, so that an operator can
// copy the file's content into LOOPZE_JWT_SECRET elsewhere and get the same secret.
//
// Creation is atomic: the secret is written to a temporary file and hard-linked into
// place, which fails if the name exists, so two processes booting together both end up
// with whichever secret was linked first and never read a half-written file. Errors name
// the file, never the secret.
func LoadHMACSecret(envValue, dataDir string) (secret.Bytes, error) {
	if envValue != "" {
		if len(envValue) < MinHMACSecretLen {
			return nil, fmt.Errorf("LOOPZE_JWT_SECRET: %w", ErrWeakSecret)
		}
		return secret.Bytes(envValue), nil
	}
	path := filepath.Join(dataDir, SecretFileName)
	s, err := readSecretFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createSecretFile(dataDir, path); err != nil {
			return nil, err
		}
		s, err = readSecretFile(path)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

func readSecretFile(path string) (secret.Bytes, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open JWT secret %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat JWT secret %s: %w", path, err)
	}
	// Anyone who can read the secret can mint an admin token for any tenant.
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("JWT secret %s has mode %04o; it must not be readable by group or others: chmod 600 %s", path, perm, path)
	}
	data, err := readAllLimited(f, 4096)
	if err != nil {
		return nil, fmt.Errorf("read JWT secret %s: %w", path, err)
	}
	s := bytes.TrimSpace(data)
	if len(s) < MinHMACSecretLen {
		return nil, fmt.Errorf("JWT secret %s: %w", path, ErrWeakSecret)
	}
	return secret.Bytes(s), nil
}

// readAllLimited refuses files larger than limit: a secret file that size is the wrong
// file, and reading it whole would be wasteful.
func readAllLimited(f *os.File, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

func createSecretFile(dataDir, path string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory %s: %w", dataDir, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("generate JWT secret: %w", err)
	}
	text := base64.StdEncoding.AppendEncode(nil, raw)
	text = append(text, '\n')

	err := durable.CreateExclusive(path, text)
	if errors.Is(err, fs.ErrExist) {
		// Another process won the race; its secret is the one everybody uses.
		return nil
	}
	if err != nil {
		return fmt.Errorf("create JWT secret: %w", err)
	}
	return nil
}
