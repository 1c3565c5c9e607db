package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
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

	"github.com/loopze/certstore/internal/secret"
)

// Ring holds the master keys: one current key that seals, and every other key it has seen,
// kept for opening until rows sealed under them are rewrapped. It is safe for concurrent
// use; Reload swaps the key set atomically under running Seal and Open calls.
//
// A Ring prints only key IDs, never key material, whatever the verb or logger.
type Ring struct {
	dataDir string // empty for a ring built by NewRing: Reload has nothing to read
	// load, for a ring of NewLoadedRing, reads its keys again on Reload.
	load   func() (current []byte, others [][]byte, err error)
	logger *slog.Logger

	// keys is replaced, never mutated, so readers need no lock.
	keys atomic.Pointer[keySet]
	// mu serialises writers (Reload, Forget) so none loses another's keys.
	mu sync.Mutex
}

// keySet is an immutable snapshot of a ring's keys.
type keySet struct {
	current *masterKey
	byID    map[string]*masterKey
}

// masterKey is a loaded master key. Only its AES-GCM instance is kept, not the raw bytes.
type masterKey struct {
	id    string
	rawID [keyIDSize]byte
	aead  cipher.AEAD
}

// String implements fmt.Stringer; a key never prints.
func (*masterKey) String() string { return secret.Redacted }

// GoString implements fmt.GoStringer.
func (*masterKey) GoString() string { return secret.Redacted }

// LogValue implements slog.LogValuer.
func (*masterKey) LogValue() slog.Value { return slog.StringValue(secret.Redacted) }

// Format implements fmt.Formatter, so no verb (%d, %x, %+v) reaches the fields.
func (*masterKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(secret.Redacted)) }

func newMasterKey(key []byte) (*masterKey, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("master key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("master key cipher: %w", err)
	}
	mk := &masterKey{id: KeyIDOf(key), aead: aead}
	_, _ = hex.Decode(mk.rawID[:], []byte(mk.id))
	return mk, nil
}

// NewRing builds a ring from key bytes: current seals, others only open. It reads no files,
// and its Reload does nothing; it serves tests and `import --key`.
func NewRing(current []byte, others ...[]byte) (*Ring, error) {
	cur, err := newMasterKey(current)
	if err != nil {
		return nil, fmt.Errorf("new key ring: current key: %w", err)
	}
	ks := &keySet{current: cur, byID: map[string]*masterKey{cur.id: cur}}
	for i, k := range others {
		mk, err := newMasterKey(k)
		if err != nil {
			return nil, fmt.Errorf("new key ring: other key %d: %w", i, err)
		}
		if _, dup := ks.byID[mk.id]; !dup {
			ks.byID[mk.id] = mk
		}
	}
	r := &Ring{logger: slog.New(slog.DiscardHandler)}
	r.keys.Store(ks)
	return r, nil
}

// NewLoadedRing builds a ring from the keys load returns (current seals, others only
// open), and reads them again from load on Reload, so a key another process added (a
// tenant key rotated on another replica) becomes usable without a restart. The keys of
// fallback, when given, are kept for opening only: the master keys values were sealed
// under before the ring's own keys existed.
func NewLoadedRing(load func() (current []byte, others [][]byte, err error), fallback *Ring) (*Ring, error) {
	r := &Ring{load: load, logger: slog.New(slog.DiscardHandler)}
	ks, err := r.loaded(nil, fallback)
	if err != nil {
		return nil, err
	}
	r.keys.Store(ks)
	return r, nil
}

// loaded builds the key set load describes, on top of prev's keys and fallback's.
func (r *Ring) loaded(prev *keySet, fallback *Ring) (*keySet, error) {
	current, others, err := r.load()
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	cur, err := newMasterKey(current)
	if err != nil {
		return nil, fmt.Errorf("load keys: current key: %w", err)
	}
	byID := map[string]*masterKey{}
	if prev != nil {
		byID = maps.Clone(prev.byID)
	}
	if fallback != nil {
		for id, mk := range fallback.keys.Load().byID {
			if _, ok := byID[id]; !ok {
				byID[id] = mk
			}
		}
	}
	if old, ok := byID[cur.id]; ok {
		cur = old // the instance running calls already use
	}
	byID[cur.id] = cur
	for i, k := range others {
		mk, err := newMasterKey(k)
		if err != nil {
			return nil, fmt.Errorf("load keys: other key %d: %w", i, err)
		}
		if _, ok := byID[mk.id]; !ok {
			byID[mk.id] = mk
		}
	}
	return &keySet{current: cur, byID: byID}, nil
}

// Load reads the master key files from dataDir, creating dataDir and loopze.key on first
// boot. When loopze.key.next exists it is the current key and loopze.key stays for opening.
// Key files readable by group or others are logged as a warning, not refused.
func Load(dataDir string, logger *slog.Logger) (*Ring, error) {
	return load(dataDir, logger, true)
}

// LoadExisting is Load without creation: a missing loopze.key is an error wrapping
// fs.ErrNotExist. Tools that must not invent a key (doctor, import) use it.
func LoadExisting(dataDir string, logger *slog.Logger) (*Ring, error) {
	return load(dataDir, logger, false)
}

func load(dataDir string, logger *slog.Logger, create bool) (*Ring, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Ring{dataDir: dataDir, logger: logger}
	ks, err := r.readKeys(nil, create)
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	r.keys.Store(ks)
	r.logger.Info("master key loaded", "current_key_id", ks.current.id, "key_ids", ks.ids())
	return r, nil
}

// Reload re-reads the key files from the data directory (or a loaded ring's keys from its
// load), so a key written by another process (a rotation, another replica) becomes usable
// without a restart. Keys already in
// the ring stay for opening even when their file is gone; the current key becomes
// loopze.key.next when present, else loopze.key. On error the ring is unchanged. A ring
// from NewRing has no directory and Reload returns nil.
func (r *Ring) Reload() error {
	if r.dataDir == "" && r.load == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.keys.Load()
	var (
		ks  *keySet
		err error
	)
	if r.load != nil {
		ks, err = r.loaded(prev, nil)
	} else {
		ks, err = r.readKeys(prev, false)
	}
	if err != nil {
		return fmt.Errorf("reload master key: %w", err)
	}
	r.keys.Store(ks)
	if ks.current != prev.current {
		r.logger.Info("master key reloaded", "current_key_id", ks.current.id, "previous_key_id", prev.current.id)
	}
	return nil
}

// Forget removes a key that is no longer needed for opening, once nothing is sealed under
// it. The current key cannot be forgotten; an ID the ring does not hold is not an error.
func (r *Ring) Forget(keyID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.keys.Load()
	if keyID == prev.current.id {
		return fmt.Errorf("forget master key %s: it is the current key", keyID)
	}
	if _, ok := prev.byID[keyID]; !ok {
		return nil
	}
	byID := maps.Clone(prev.byID)
	delete(byID, keyID)
	r.keys.Store(&keySet{current: prev.current, byID: byID})
	return nil
}

// readKeys builds the key set the files describe, on top of prev's keys.
func (r *Ring) readKeys(prev *keySet, create bool) (*keySet, error) {
	keyPath := filepath.Join(r.dataDir, KeyFile)
	nextPath := filepath.Join(r.dataDir, NextKeyFile)

	next, err := r.readChecked(nextPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	base, err := r.readChecked(keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist) && next != nil:
		// A half-finished rotation never deletes loopze.key; its absence beside a next key
		// means the data directory was damaged, and inventing a key would hide that.
		return nil, fmt.Errorf("%s exists but %s is missing: %w", nextPath, keyPath, err)
	case errors.Is(err, fs.ErrNotExist) && create:
		base, err = r.create(keyPath)
		if err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}

	byID := map[string]*masterKey{}
	if prev != nil {
		byID = maps.Clone(prev.byID)
	}
	cur := base
	if next != nil {
		cur = next
	}
	for _, mk := range []*masterKey{base, next} {
		if mk == nil {
			continue
		}
		if old, ok := byID[mk.id]; ok {
			// Same ID, same key: keep the instance running calls already use.
			if mk == cur {
				cur = old
			}
			continue
		}
		byID[mk.id] = mk
	}
	return &keySet{current: cur, byID: byID}, nil
}

// readChecked reads a key file, warning when its mode is looser than 0600. A missing file
// is returned as an error wrapping fs.ErrNotExist and a nil key.
func (r *Ring) readChecked(path string) (*masterKey, error) {
	key, mode, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if TooOpen(mode) {
		r.logger.Warn("master key file is readable by others; chmod 600 it",
			"path", path, "mode", fmt.Sprintf("%#o", mode))
	}
	mk, err := newMasterKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return mk, nil
}

// create writes a fresh key to path. When another process wins the race to create it, that
// process's key is read and used instead, so every booting process ends on the same key.
func (r *Ring) create(path string) (*masterKey, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	defer clear(key)
	err = WriteKeyFile(path, key)
	if errors.Is(err, fs.ErrExist) {
		return r.readChecked(path)
	}
	if err != nil {
		return nil, err
	}
	mk, err := newMasterKey(key)
	if err != nil {
		return nil, err
	}
	r.logger.Info("created master key; back it up separately from credentials.json",
		"path", path, "key_id", mk.id)
	return mk, nil
}

// CurrentKeyID is the ID of the key that Seal uses.
func (r *Ring) CurrentKeyID() string { return r.keys.Load().current.id }

// KeyIDs lists the IDs of every key the ring can open with, sorted.
func (r *Ring) KeyIDs() []string { return r.keys.Load().ids() }

// Has reports whether the ring holds the key with this ID.
func (r *Ring) Has(keyID string) bool {
	_, ok := r.keys.Load().byID[keyID]
	return ok
}

func (ks *keySet) ids() []string {
	return slices.Sorted(maps.Keys(ks.byID))
}

// String implements fmt.Stringer with key IDs only.
func (r *Ring) String() string {
	ks := r.keys.Load()
	if ks == nil {
		return "envelope.Ring{}"
	}
	return fmt.Sprintf("envelope.Ring{current: %s, keys: %v}", ks.current.id, ks.ids())
}

// GoString implements fmt.GoStringer.
func (r *Ring) GoString() string { return r.String() }

// Format implements fmt.Formatter, so every verb prints String and none reaches the keys.
func (r *Ring) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.String())) }

// LogValue implements slog.LogValuer with key IDs only.
func (r *Ring) LogValue() slog.Value {
	ks := r.keys.Load()
	if ks == nil {
		return slog.GroupValue()
	}
	return slog.GroupValue(
		slog.String("current_key_id", ks.current.id),
		slog.Any("key_ids", ks.ids()),
	)
}
