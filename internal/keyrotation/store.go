package keyrotation

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/masterkey"
)

// KeyringIDFile is the file, beside the master key file, that holds a random ID of the
// directory: replicas that read their master key from one shared directory read one ID,
// replicas with a directory each (holding copies of one key) read different ones. That is
// what a scheduled rotation must tell apart, since only replicas of one directory see the
// next key that one of them writes. Giving a replica a directory of its own means copying
// loopze.key into it, never this file.
const KeyringIDFile = "loopze.keyring-id"

// ErrNotSchedulable means the master key lives where serve cannot rotate it unattended.
var ErrNotSchedulable = errors.New("the master key cannot be rotated on a schedule")

// CheckSchedulable refuses a master key store that a scheduled rotation could not take to
// its end: a systemd credential, which serve cannot replace (each rotation would stop
// before retiring the old key, leaving the operator to re-encrypt the credential), and a
// PKCS#11 URI pinning one key by its id, beside which no next key can be made.
func CheckSchedulable(src masterkey.Source) error {
	switch {
	case src.Credential:
		return fmt.Errorf("%w: it is the systemd credential %s, which only the operator can replace; rotate it by hand (loopze-certs rotate-key, then encrypt %s into the credential)",
			ErrNotSchedulable, src.Path, src.NextPath)
	case src.Kind == masterkey.KindPKCS11 && len(src.PKCS11.ID) > 0:
		return fmt.Errorf("%w: the PKCS#11 URI pins one key by its id; drop id= so a next key can be made beside it", ErrNotSchedulable)
	}
	return nil
}

// StoreID names the store src keeps the master keys in, the same for every replica that
// reads the same one: for a key file, "file:" and the random ID in KeyringIDFile beside
// it (made on first use; of replicas starting at once, one writes it and all read it);
// for a PKCS#11 token, the token and object its URI selects. It never holds a secret.
func StoreID(src masterkey.Source) (string, error) {
	if src.Kind == masterkey.KindPKCS11 {
		u := src.PKCS11
		return fmt.Sprintf("pkcs11:token=%s;manufacturer=%s;serial=%s;model=%s;object=%s",
			u.Token, u.Manufacturer, u.Serial, u.Model, u.Object), nil
	}
	// The directory where the next key is written: the one replicas must share.
	path := filepath.Join(filepath.Dir(src.NextPath), KeyringIDFile)
	id, err := readKeyringID(path)
	if errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("make the keyring ID: %w", err)
		}
		err = durable.CreateExclusive(path, []byte(hex.EncodeToString(b)+"\n"))
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("write the keyring ID: %w", err)
		}
		id, err = readKeyringID(path)
	}
	if err != nil {
		return "", err
	}
	return "file:" + id, nil
}

// readKeyringID reads KeyringIDFile at path: 32 lowercase hex characters.
func readKeyringID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the keyring ID: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if _, err := hex.DecodeString(id); err != nil || len(id) != 32 || strings.ToLower(id) != id {
		return "", fmt.Errorf("read the keyring ID: %s does not hold 32 lowercase hex characters; delete it and restart to make a new one", path)
	}
	return id, nil
}
