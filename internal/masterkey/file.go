package masterkey

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/envelope"
)

// fileRing is a keyring of key files, in the layout the envelope's ring reads: loopze.key,
// and loopze.key.next during a rotation, which is then the current key. The files are read,
// written and created by the envelope's key file functions, so both see the same keys under
// the same IDs.
type fileRing struct {
	src     Source
	dataDir string
	logger  *slog.Logger

	// keys is replaced, never mutated, so Current and Get take no lock.
	keys atomic.Pointer[fileSet]
	// mu serialises Next, Retire and Reload, so none loses another's keys.
	mu     sync.Mutex
	closed atomic.Bool
}

// fileSet is an immutable snapshot of a file ring's keys.
type fileSet struct {
	current *fileKey
	// base is the key read from src.Path; next is true while src.NextPath exists.
	base *fileKey
	next bool
	byID map[string]*fileKey
}

// fileKey is a master key from a file. Only its AES-GCM instance is kept, not its bytes.
type fileKey struct {
	id   string
	aead cipher.AEAD
	ring *fileRing
}

func openFile(src Source, dataDir string, logger *slog.Logger) (*fileRing, error) {
	r := &fileRing{src: src, dataDir: dataDir, logger: logger}
	ks, err := r.readKeys(nil, !src.Credential)
	if err != nil {
		return nil, err
	}
	if src.Credential {
		if err := r.checkCredential(ks); err != nil {
			return nil, err
		}
	}
	r.keys.Store(ks)
	logger.Info("master key loaded", "source", r.describe(), "current_key_id", ks.current.id, "key_ids", ks.ids())
	return r, nil
}

// describe names the store in logs: a path, never key material.
func (r *fileRing) describe() string {
	if r.src.Credential {
		return "systemd credential " + r.src.Path
	}
	return r.src.Path
}

// checkCredential looks for plaintext copies of the credential's key in the data directory:
// a leftover loopze.key is warned about when it holds the same key and refused when it holds
// another (which key would the operator expect?); a loopze.key.next equal to the credential
// is what is left after the operator re-encrypted it, and is warned about too.
func (r *fileRing) checkCredential(ks *fileSet) error {
	plain := filepath.Join(r.dataDir, envelope.KeyFile)
	k, err := r.read(plain, true)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case k.id != ks.base.id:
		return fmt.Errorf("%s holds key %s but the systemd credential %s holds key %s: "+
			"keep the one the data was sealed under in the credential and move the other out of the data directory",
			plain, k.id, r.src.Path, ks.base.id)
	default:
		r.logger.Warn("the data directory holds a plaintext copy of the master key the systemd credential carries; delete it",
			"path", plain, "key_id", k.id)
	}
	if ks.next && ks.current == ks.base {
		r.logger.Warn("the next key in the data directory is the key the systemd credential now carries; delete the plaintext copy",
			"path", r.src.NextPath, "key_id", ks.base.id)
	}
	return nil
}

// readKeys builds the key set the files describe, on top of prev's keys.
func (r *fileRing) readKeys(prev *fileSet, create bool) (*fileSet, error) {
	next, err := r.read(r.src.NextPath, true)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	base, err := r.read(r.src.Path, !r.src.Credential)
	switch {
	case errors.Is(err, fs.ErrNotExist) && next != nil:
		// A rotation never deletes the base key before its next key replaces it; a next key
		// alone means the directory was damaged, and inventing a base key would hide that.
		return nil, fmt.Errorf("%s exists but %s is missing: %w", r.src.NextPath, r.src.Path, err)
	case errors.Is(err, fs.ErrNotExist) && create:
		if base, err = r.create(); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}

	byID := map[string]*fileKey{}
	if prev != nil {
		byID = maps.Clone(prev.byID)
	}
	// Same ID, same key: keep the instance running calls already use.
	keep := func(k *fileKey) *fileKey {
		if old, ok := byID[k.id]; ok {
			return old
		}
		byID[k.id] = k
		return k
	}
	ks := &fileSet{base: keep(base), byID: byID}
	ks.current = ks.base
	if next != nil {
		ks.next = true
		ks.current = keep(next)
	}
	return ks, nil
}

// read reads one key file. strict refuses a file group or others may read, as the server
// refuses them at start; a systemd credential is exempt, since systemd grants the service
// user read access through an ACL, which shows as group bits in the mode.
func (r *fileRing) read(path string, strict bool) (*fileKey, error) {
	key, mode, err := envelope.ReadKeyFileMode(path)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if strict && envelope.TooOpen(mode) {
		return nil, fmt.Errorf("%s has mode %04o; it must not be readable by group or others: chmod 600 %s", path, mode, path)
	}
	k, err := r.newKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func (r *fileRing) newKey(key []byte) (*fileKey, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("master key cipher: %w", err)
	}
	return &fileKey{id: envelope.KeyIDOf(key), aead: aead, ring: r}, nil
}

// create writes a fresh key to src.Path on first boot. When another process wins the race
// to create it, that process's key is read and used instead.
func (r *fileRing) create() (*fileKey, error) {
	k, made, err := r.write(r.src.Path)
	if err != nil {
		return nil, err
	}
	if made {
		r.logger.Info("created master key; back it up separately from credentials.json", "path", r.src.Path, "key_id", k.id)
	}
	return k, nil
}

// write creates a new key file at path, or reads the one another process created first.
func (r *fileRing) write(path string) (k *fileKey, made bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create key directory: %w", err)
	}
	key, err := envelope.GenerateKey()
	if err != nil {
		return nil, false, err
	}
	defer clear(key)
	err = envelope.WriteKeyFile(path, key)
	if errors.Is(err, fs.ErrExist) {
		k, err := r.read(path, true)
		return k, false, err
	}
	if err != nil {
		return nil, false, err
	}
	k, err = r.newKey(key)
	return k, true, err
}

// Current implements Keyring.
func (r *fileRing) Current() Key { return r.keys.Load().current }

// Get implements Keyring.
func (r *fileRing) Get(id string) (Key, bool) {
	k, ok := r.keys.Load().byID[id]
	if !ok {
		return nil, false
	}
	return k, true
}

// IDs implements Keyring.
func (r *fileRing) IDs() []string { return r.keys.Load().ids() }

func (ks *fileSet) ids() []string { return slices.Sorted(maps.Keys(ks.byID)) }

// Next writes loopze.key.next (0600, through durable, never over an existing file) and
// makes it current. When a next key is already on disk, written by an earlier call that
// did not finish or by another process, that key is returned instead.
func (r *fileRing) Next() (Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	ks, err := r.readKeys(r.keys.Load(), false)
	if err != nil {
		return nil, fmt.Errorf("next master key: %w", err)
	}
	if !ks.next {
		k, made, err := r.write(r.src.NextPath)
		if err != nil {
			return nil, fmt.Errorf("next master key: %w", err)
		}
		if made {
			r.logger.Info("new master key written beside the current one; back it up", "path", r.src.NextPath, "key_id", k.id)
		}
		if ks, err = r.readKeys(ks, false); err != nil {
			return nil, fmt.Errorf("next master key: %w", err)
		}
	}
	r.keys.Store(ks)
	return ks.current, nil
}

// Retire forgets key id. When id is the key in loopze.key and loopze.key.next exists, the
// next key is renamed over it (one atomic, synced rename): the rotation's last step. A key
// held only in memory (its file already replaced by another process) is dropped. A key in
// a systemd credential cannot be retired from here: ErrReadOnly says what the operator does.
func (r *fileRing) Retire(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return ErrClosed
	}
	ks, err := r.readKeys(r.keys.Load(), false)
	if err != nil {
		return fmt.Errorf("retire master key %s: %w", id, err)
	}
	if id == ks.current.id {
		return fmt.Errorf("retire master key %s: %w", id, ErrCurrent)
	}
	if _, ok := ks.byID[id]; !ok {
		return nil
	}
	if id == ks.base.id {
		if r.src.Credential {
			return fmt.Errorf("retire master key %s: %w: it is the systemd credential %s; encrypt %s into the unit's credential "+
				"(systemd-creds encrypt --name=%s %s CREDENTIAL_FILE), restart the service, then delete %s",
				id, ErrReadOnly, r.src.Path, r.src.NextPath, envelope.KeyFile, r.src.NextPath, r.src.NextPath)
		}
		if err := durable.Rename(r.src.NextPath, r.src.Path); err != nil {
			return fmt.Errorf("retire master key %s: %w", id, err)
		}
		r.logger.Info("master key retired; the next key is now "+filepath.Base(r.src.Path), "retired_key_id", id, "current_key_id", ks.current.id)
		ks = &fileSet{current: ks.current, base: ks.current, byID: ks.byID}
	}
	byID := maps.Clone(ks.byID)
	delete(byID, id)
	r.keys.Store(&fileSet{current: ks.current, base: ks.base, next: ks.next, byID: byID})
	return nil
}

// Reload implements Keyring.
func (r *fileRing) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return ErrClosed
	}
	prev := r.keys.Load()
	ks, err := r.readKeys(prev, false)
	if err != nil {
		return fmt.Errorf("reload master key: %w", err)
	}
	r.keys.Store(ks)
	if ks.current != prev.current {
		r.logger.Info("master key reloaded", "current_key_id", ks.current.id, "previous_key_id", prev.current.id)
	}
	return nil
}

// Close implements Keyring. A file ring holds no handle; closing it stops its keys.
func (r *fileRing) Close() error {
	r.closed.Store(true)
	return nil
}

// ID implements Key.
func (k *fileKey) ID() string { return k.id }

// Wrap implements Key.
func (k *fileKey) Wrap(plaintext, aad []byte) ([]byte, error) {
	if k.ring.closed.Load() {
		return nil, fmt.Errorf("wrap under master key %s: %w", k.id, ErrClosed)
	}
	if err := checkWrap(plaintext); err != nil {
		return nil, err
	}
	return envelope.WrapKey(k.aead, plaintext, aad)
}

// Unwrap implements Key.
func (k *fileKey) Unwrap(wrapped, aad []byte) ([]byte, error) {
	if k.ring.closed.Load() {
		return nil, fmt.Errorf("unwrap under master key %s: %w", k.id, ErrClosed)
	}
	plain, err := envelope.UnwrapKey(k.aead, wrapped, aad)
	if err != nil {
		return nil, fmt.Errorf("%w under master key %s", ErrUnwrap, k.id)
	}
	return plain, nil
}

// String implements fmt.Stringer with the key ID only.
func (k *fileKey) String() string { return "masterkey.Key{" + k.id + "}" }

// GoString implements fmt.GoStringer.
func (k *fileKey) GoString() string { return k.String() }

// Format implements fmt.Formatter, so no verb (%x, %+v) reaches the cipher.
func (k *fileKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// LogValue implements slog.LogValuer.
func (k *fileKey) LogValue() slog.Value { return slog.StringValue(k.id) }

// String implements fmt.Stringer with key IDs only.
func (r *fileRing) String() string {
	ks := r.keys.Load()
	return fmt.Sprintf("masterkey.Keyring{%s, current: %s, keys: %v}", r.describe(), ks.current.id, ks.ids())
}

// GoString implements fmt.GoStringer.
func (r *fileRing) GoString() string { return r.String() }

// Format implements fmt.Formatter, so every verb prints String.
func (r *fileRing) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.String())) }

// LogValue implements slog.LogValuer with key IDs only.
func (r *fileRing) LogValue() slog.Value {
	ks := r.keys.Load()
	return slog.GroupValue(slog.String("source", r.describe()),
		slog.String("current_key_id", ks.current.id), slog.Any("key_ids", ks.ids()))
}
