//go:build cgo

package masterkey

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/loopze/certstore/internal/secret"
)

// poolSize is how many sessions a token ring keeps open. A session runs one operation at a
// time, so this bounds the wraps and unwraps in flight; further callers wait for a session.
const poolSize = 4

// maxPINFile bounds how much of a pin-source file is read: a wrong path (a log, a device)
// must not be slurped into memory.
const maxPINFile = 4096

// module is one loaded PKCS#11 library. A process initialises a library once, however many
// rings use it, and finalises it when the last one closes. The library itself stays loaded
// for the life of the process: unloading one that keeps process-wide state (SoftHSM's
// OpenSSL) is not safe, and loading it again costs more than keeping it.
type module struct {
	path string
	ctx  *pkcs11.Ctx
	refs int
	// owns is false when the library was initialised by someone else in this process, who
	// then also finalises it.
	owns bool
}

var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

func acquireModule(path string) (*module, error) {
	modules.Lock()
	defer modules.Unlock()
	m := modules.m[path]
	if m == nil {
		// pkcs11.New says nothing about why a library did not load; stat first, so a missing
		// file says so.
		info, err := os.Stat(path)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, fmt.Errorf("%w %s: %w", ErrModule, path, err)
		}
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("%w %s: not a regular file", ErrModule, path)
		}
		ctx := pkcs11.New(path)
		if ctx == nil {
			return nil, fmt.Errorf("%w %s cannot be loaded: it is not a PKCS#11 library, or a library it needs is missing", ErrModule, path)
		}
		m = &module{path: path, ctx: ctx}
		modules.m[path] = m
	}
	if m.refs == 0 {
		err := m.ctx.Initialize()
		switch {
		case err == nil:
			m.owns = true
		case isCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
			m.owns = false
		default:
			return nil, fmt.Errorf("%w %s: initialise: %w", ErrModule, path, err)
		}
	}
	m.refs++
	return m, nil
}

func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs == 0 && m.owns {
		_ = m.ctx.Finalize()
	}
}

func isCKR(err error, code uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == code
}

// tokenRing is a keyring of AES secret key objects sharing one label in a PKCS#11 token.
// The keys never leave the token: wraps and unwraps are CKM_AES_GCM inside it.
type tokenRing struct {
	uri    *PKCS11URI
	mod    *module
	token  string // the token's label, for messages
	logger *slog.Logger

	// mu is held shared by every operation on a session and exclusively by Close, so
	// Close waits for operations in flight and none starts after it.
	mu       sync.RWMutex
	closed   bool
	sessions []pkcs11.SessionHandle
	idle     chan pkcs11.SessionHandle

	// admin serialises Next, Retire and Reload.
	admin sync.Mutex
	// keys is replaced, never mutated.
	keys atomic.Pointer[tokenSet]
}

// tokenSet is an immutable snapshot of the key objects found in the token.
type tokenSet struct {
	current *tokenKey
	byID    map[string]*tokenKey
}

// tokenKey is one key object. Its handle is valid in every session of the process.
type tokenKey struct {
	ring   *tokenRing
	handle pkcs11.ObjectHandle
	ckaID  []byte
	id     string
}

func openPKCS11(u *PKCS11URI, getenv func(string) string, logger *slog.Logger) (_ Keyring, err error) {
	mod, err := acquireModule(u.ModulePath)
	if err != nil {
		return nil, err
	}
	r := &tokenRing{uri: u, mod: mod, logger: logger}
	defer func() {
		if err != nil {
			r.closeSessions()
			mod.release()
		}
	}()
	slot, err := r.findSlot()
	// A file-backed token (SoftHSM2) that another process is rewriting (a rotation making
	// or destroying a key object) reads as absent for a moment: look again a few times
	// before calling the token missing.
	for i := 0; errors.Is(err, ErrNoToken) && i < slotRetries; i++ {
		time.Sleep(slotRetryDelay)
		slot, err = r.findSlot()
	}
	if err != nil {
		return nil, err
	}
	pin, err := readPIN(u, getenv, logger)
	if err != nil {
		return nil, err
	}
	for range poolSize {
		s, err := mod.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return nil, fmt.Errorf("%w %q: open session: %w", ErrNoToken, r.token, err)
		}
		r.sessions = append(r.sessions, s)
	}
	// A login holds for every session of the process on the token. When another ring of
	// this process is logged in already, the token does not check this PIN again: the
	// process has shown it knows one.
	switch err := mod.ctx.Login(r.sessions[0], pkcs11.CKU_USER, pin.Reveal()); {
	case err == nil, isCKR(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
	case isCKR(err, pkcs11.CKR_PIN_INCORRECT):
		return nil, fmt.Errorf("%w: token %q refused the PIN (CKR_PIN_INCORRECT)", ErrLogin, r.token)
	case isCKR(err, pkcs11.CKR_PIN_LOCKED):
		return nil, fmt.Errorf("%w: token %q has locked the user PIN (CKR_PIN_LOCKED)", ErrLogin, r.token)
	case isCKR(err, pkcs11.CKR_PIN_LEN_RANGE):
		return nil, fmt.Errorf("%w: token %q refused the PIN's length (CKR_PIN_LEN_RANGE)", ErrLogin, r.token)
	default:
		return nil, fmt.Errorf("%w: token %q: %w", ErrLogin, r.token, err)
	}
	r.idle = make(chan pkcs11.SessionHandle, len(r.sessions))
	for _, s := range r.sessions {
		r.idle <- s
	}
	ks, err := r.scan(nil)
	if err != nil {
		return nil, err
	}
	r.keys.Store(ks)
	logger.Info("master key loaded", "source", u.String(), "current_key_id", ks.current.id, "key_ids", ks.ids())
	return r, nil
}

// slotRetries and slotRetryDelay bound how long Open looks again for a token it did not
// find: 200 ms, far below any start timeout, and a missing token is still one line.
const (
	slotRetries    = 10
	slotRetryDelay = 20 * time.Millisecond
)

// findSlot finds the one initialised token the URI matches.
func (r *tokenRing) findSlot() (uint, error) {
	ctx, u := r.mod.ctx, r.uri
	if u.LibraryManufacturer != "" || u.LibraryDescription != "" {
		info, err := ctx.GetInfo()
		if err != nil {
			return 0, fmt.Errorf("%w %s: %w", ErrModule, r.mod.path, err)
		}
		if !matches(u.LibraryManufacturer, info.ManufacturerID) || !matches(u.LibraryDescription, info.LibraryDescription) {
			return 0, fmt.Errorf("%w %s is %q by %q, not the library the URI names", ErrModule, r.mod.path,
				strings.TrimSpace(info.LibraryDescription), strings.TrimSpace(info.ManufacturerID))
		}
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%w: list slots: %w", ErrNoToken, err)
	}
	var found []uint
	var labels, present []string
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		present = append(present, fmt.Sprintf("%q", ti.Label))
		if u.HasSlotID && u.SlotID != s || !matches(u.Token, ti.Label) || !matches(u.Manufacturer, ti.ManufacturerID) ||
			!matches(u.Serial, ti.SerialNumber) || !matches(u.Model, ti.Model) {
			continue
		}
		if u.SlotDescription != "" || u.SlotManufacturer != "" {
			si, err := ctx.GetSlotInfo(s)
			if err != nil || !matches(u.SlotDescription, si.SlotDescription) || !matches(u.SlotManufacturer, si.ManufacturerID) {
				continue
			}
		}
		found = append(found, s)
		labels = append(labels, ti.Label)
	}
	switch len(found) {
	case 0:
		if len(present) == 0 {
			return 0, fmt.Errorf("%w: the module has no initialised token", ErrNoToken)
		}
		return 0, fmt.Errorf("%w: no initialised token matches the URI (tokens present: %s)", ErrNoToken, strings.Join(present, ", "))
	case 1:
		r.token = labels[0]
		return found[0], nil
	}
	return 0, fmt.Errorf("%w: %d tokens match the URI; add token=, serial= or slot-id= to choose one", ErrNoToken, len(found))
}

// matches compares a URI attribute with a blank-padded CK_*_INFO field; an absent
// attribute matches anything.
func matches(want, got string) bool {
	return want == "" || want == strings.TrimRight(got, " \x00")
}

// readPIN returns pin-value, or the first line of the pin-source file.
func readPIN(u *PKCS11URI, getenv func(string) string, logger *slog.Logger) (secret.String, error) {
	if u.PINValue != "" {
		return u.PINValue, nil
	}
	f, err := os.Open(u.PINSource)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("%w: read PIN from %s: %w", ErrLogin, u.PINSource, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: read PIN from %s: %w", ErrLogin, u.PINSource, err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("%w: read PIN from %s: not a regular file", ErrLogin, u.PINSource)
	}
	// A systemd credential shows its ACL as group bits; anything else loose is warned about.
	if mode := info.Mode().Perm(); mode&0o077 != 0 && !inCredentials(u.PINSource, getenv) {
		logger.Warn("PIN file is readable by others; chmod 600 it", "path", u.PINSource, "mode", fmt.Sprintf("%#o", mode))
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxPINFile+1))
	defer clear(raw)
	if err != nil {
		return "", fmt.Errorf("%w: read PIN from %s: %w", ErrLogin, u.PINSource, err)
	}
	if len(raw) > maxPINFile {
		return "", fmt.Errorf("%w: PIN file %s is larger than %d bytes", ErrLogin, u.PINSource, maxPINFile)
	}
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return "", fmt.Errorf("%w: the first line of PIN file %s is empty", ErrLogin, u.PINSource)
	}
	return secret.String(line), nil
}

func inCredentials(path string, getenv func(string) string) bool {
	dir := getenv(CredentialsEnv)
	if dir == "" {
		return false
	}
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// do runs f on an idle session of the ring.
func (r *tokenRing) do(f func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	s := <-r.idle
	defer func() { r.idle <- s }()
	return f(r.mod.ctx, s)
}

// scan finds every AES secret key object with the URI's label (and id, when pinned),
// checks each, and computes its ID in the token. Instances of prev are kept for unchanged
// objects. No object is ErrNoKey.
func (r *tokenRing) scan(prev *tokenSet) (*tokenSet, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, r.uri.Object),
	}
	if r.uri.ID != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, r.uri.ID))
	}
	ks := &tokenSet{byID: map[string]*tokenKey{}}
	err := r.do(func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		handles, err := findObjects(ctx, s, tmpl)
		if err != nil {
			return fmt.Errorf("find key objects: %w", err)
		}
		for _, h := range handles {
			k, err := r.inspect(ctx, s, h)
			if err != nil {
				return err
			}
			if prev != nil {
				if old, ok := prev.byID[k.id]; ok && old.handle == k.handle {
					k = old
				}
			}
			ks.byID[k.id] = k
			if ks.current == nil || newer(k, ks.current) {
				ks.current = k
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ks.current == nil {
		what := fmt.Sprintf("labelled %q", r.uri.Object)
		if r.uri.ID != nil {
			what += fmt.Sprintf(" with id %x", r.uri.ID)
		}
		return nil, fmt.Errorf("%w: token %q holds no AES secret key %s; create one (see docs/operations.md, \"The master key in an HSM\")",
			ErrNoKey, r.token, what)
	}
	return ks, nil
}

func findObjects(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := ctx.FindObjects(s, 64)
		if err != nil {
			_ = ctx.FindObjectsFinal(s)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	return all, ctx.FindObjectsFinal(s)
}

// inspect reads a key object's attributes, refuses one that cannot serve as the master key
// and warns about one that could leave the token.
func (r *tokenRing) inspect(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (*tokenKey, error) {
	attrs, err := ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read attributes of a key labelled %q: %w", ErrNoKey, r.uri.Object, err)
	}
	ckaID := attrs[0].Value
	name := fmt.Sprintf("key %q id %x", r.uri.Object, ckaID)
	if n := ulong(attrs[1].Value); n != KeySize {
		return nil, fmt.Errorf("%w: %s is AES-%d; the master key must be AES-256", ErrNoKey, name, n*8)
	}
	if !flag(attrs[2].Value) || !flag(attrs[3].Value) {
		return nil, fmt.Errorf("%w: %s does not allow both encrypt and decrypt (CKA_ENCRYPT, CKA_DECRYPT)", ErrNoKey, name)
	}
	if !flag(attrs[4].Value) || flag(attrs[5].Value) {
		r.logger.Warn("master key object can leave the token: make it CKA_SENSITIVE and not CKA_EXTRACTABLE",
			"key", name, "sensitive", flag(attrs[4].Value), "extractable", flag(attrs[5].Value))
	}
	k := &tokenKey{ring: r, handle: h, ckaID: bytes.Clone(ckaID)}
	if k.id, err = keyCheckValue(ctx, s, h); err != nil {
		return nil, fmt.Errorf("%w: %s: compute its ID: %w", ErrNoKey, name, err)
	}
	return k, nil
}

// keyCheckValue is a key's ID: the first 8 bytes of the GCM tag of an empty plaintext under
// a fixed label and the all-zero IV, computed in the token. It depends on the key's material
// alone, not on its label or CKA_ID, and reveals nothing of it; Wrap never uses that IV.
func keyCheckValue(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (string, error) {
	tag, err := gcm(ctx, s, h, true, make([]byte, IVSize), []byte(labelKeyID), nil)
	if err != nil {
		return "", err
	}
	if len(tag) != TagSize {
		return "", fmt.Errorf("the token returned a %d-byte tag, want %d", len(tag), TagSize)
	}
	return hex.EncodeToString(tag[:8]), nil
}

// gcm runs one CKM_AES_GCM encryption or decryption in the token with a 128-bit tag.
func gcm(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, h pkcs11.ObjectHandle, encrypt bool, iv, ad, in []byte) ([]byte, error) {
	params := pkcs11.NewGCMParams(iv, ad, TagSize*8)
	defer params.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
	if encrypt {
		if err := ctx.EncryptInit(s, mech, h); err != nil {
			return nil, err
		}
		out, err := ctx.Encrypt(s, in)
		// Some tokens write an IV of their own (the PKCS#11 2.40 note on GCM); SoftHSM and
		// most take the caller's. One that changed it would make the output unopenable.
		if err == nil && !bytes.Equal(params.IV(), iv) {
			return nil, errors.New("the token replaced the IV it was given, which this keyring does not support")
		}
		return out, err
	}
	if err := ctx.DecryptInit(s, mech, h); err != nil {
		return nil, err
	}
	return ctx.Decrypt(s, in)
}

func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

func flag(b []byte) bool { return len(b) == 1 && b[0] != 0 }

// newer orders keys by CKA_ID as an unsigned big-endian number, then by key ID, so every
// process agrees on the current key even if two made the same CKA_ID at once.
func newer(a, b *tokenKey) bool {
	x, y := bytes.TrimLeft(a.ckaID, "\x00"), bytes.TrimLeft(b.ckaID, "\x00")
	if len(x) != len(y) {
		return len(x) > len(y)
	}
	if c := bytes.Compare(x, y); c != 0 {
		return c > 0
	}
	return a.id > b.id
}

// nextCKAID is id plus one, as an unsigned big-endian number of at least id's width.
func nextCKAID(id []byte) []byte {
	out := bytes.Clone(id)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out
		}
	}
	return append([]byte{1}, out...)
}

// Current implements Keyring.
func (r *tokenRing) Current() Key { return r.keys.Load().current }

// Get implements Keyring.
func (r *tokenRing) Get(id string) (Key, bool) {
	k, ok := r.keys.Load().byID[id]
	if !ok {
		return nil, false
	}
	return k, true
}

// IDs implements Keyring.
func (r *tokenRing) IDs() []string { return r.keys.Load().ids() }

func (ks *tokenSet) ids() []string { return slices.Sorted(maps.Keys(ks.byID)) }

// Next generates an AES-256 key in the token (CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, never
// extractable, encrypt and decrypt only) with the URI's label and the CKA_ID after the
// current key's, and makes it current. When the token holds more than one key with the
// label, a rotation is under way and the current key is returned instead.
func (r *tokenRing) Next() (Key, error) {
	r.admin.Lock()
	defer r.admin.Unlock()
	if r.uri.ID != nil {
		return nil, fmt.Errorf("next master key: %w: the URI pins the key id=%x; drop id= to rotate", ErrReadOnly, r.uri.ID)
	}
	ks, err := r.scan(r.keys.Load())
	if err != nil {
		return nil, fmt.Errorf("next master key: %w", err)
	}
	if len(ks.byID) == 1 {
		id := nextCKAID(ks.current.ckaID)
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, KeySize),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, r.uri.Object),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
		err := r.do(func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
			_, err := ctx.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, tmpl)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("next master key: generate in token %q: %w", r.token, err)
		}
		// Scan rather than add the one key made here: another process may have made one too.
		if ks, err = r.scan(ks); err != nil {
			return nil, fmt.Errorf("next master key: %w", err)
		}
		r.logger.Info("new master key generated in the token", "token", r.token, "cka_id", hex.EncodeToString(id), "key_id", ks.current.id)
	}
	r.keys.Store(ks)
	return ks.current, nil
}

// Retire destroys the key's object in the token (C_DestroyObject, atomic in the token).
func (r *tokenRing) Retire(id string) error {
	r.admin.Lock()
	defer r.admin.Unlock()
	ks, err := r.scan(r.keys.Load())
	if err != nil {
		return fmt.Errorf("retire master key %s: %w", id, err)
	}
	if id == ks.current.id {
		return fmt.Errorf("retire master key %s: %w", id, ErrCurrent)
	}
	k, ok := ks.byID[id]
	if !ok {
		r.keys.Store(ks)
		return nil
	}
	err = r.do(func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error { return ctx.DestroyObject(s, k.handle) })
	if err != nil {
		return fmt.Errorf("retire master key %s: destroy its object in token %q: %w", id, r.token, err)
	}
	if ks, err = r.scan(ks); err != nil {
		return fmt.Errorf("retire master key %s: %w", id, err)
	}
	r.keys.Store(ks)
	r.logger.Info("master key destroyed in the token", "token", r.token, "retired_key_id", id, "current_key_id", ks.current.id)
	return nil
}

// Reload implements Keyring. Keys whose objects are gone from the token are dropped: their
// handles no longer open anything.
func (r *tokenRing) Reload() error {
	r.admin.Lock()
	defer r.admin.Unlock()
	prev := r.keys.Load()
	ks, err := r.scan(prev)
	if err != nil {
		return fmt.Errorf("reload master key: %w", err)
	}
	r.keys.Store(ks)
	if ks.current.id != prev.current.id {
		r.logger.Info("master key reloaded", "current_key_id", ks.current.id, "previous_key_id", prev.current.id)
	}
	return nil
}

// Close closes the ring's sessions, after the operations in flight, and finalises the
// module when no other ring uses it. Closing the last session on the token ends the login.
func (r *tokenRing) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.closeSessions()
	r.mod.release()
	return nil
}

func (r *tokenRing) closeSessions() {
	for _, s := range r.sessions {
		_ = r.mod.ctx.CloseSession(s)
	}
	r.sessions = nil
}

// ID implements Key.
func (k *tokenKey) ID() string { return k.id }

// Wrap implements Key: CKM_AES_GCM in the token with a random IV drawn here.
func (k *tokenKey) Wrap(plaintext, aad []byte) ([]byte, error) {
	if err := checkWrap(plaintext); err != nil {
		return nil, err
	}
	iv := make([]byte, IVSize)
	for zeroIV(iv) {
		if _, err := rand.Read(iv); err != nil {
			return nil, fmt.Errorf("wrap: random IV: %w", err)
		}
	}
	var ct []byte
	err := k.ring.do(func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) (err error) {
		ct, err = gcm(ctx, s, k.handle, true, iv, wrapAAD(aad), plaintext)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wrap under master key %s: %w", k.id, err)
	}
	if len(ct) != len(plaintext)+TagSize {
		return nil, fmt.Errorf("wrap under master key %s: the token returned %d bytes, want %d", k.id, len(ct), len(plaintext)+TagSize)
	}
	return append(iv, ct...), nil
}

// Unwrap implements Key: CKM_AES_GCM decryption in the token. A token reports a tag that
// does not match as CKR_ENCRYPTED_DATA_INVALID (SoftHSM as CKR_GENERAL_ERROR); both, and a
// length it refuses, are ErrUnwrap.
func (k *tokenKey) Unwrap(wrapped, aad []byte) ([]byte, error) {
	if len(wrapped) <= Overhead || len(wrapped) > Overhead+MaxWrap {
		return nil, fmt.Errorf("%w: %d bytes is not a wrapped key", ErrUnwrap, len(wrapped))
	}
	var plain []byte
	err := k.ring.do(func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) (err error) {
		plain, err = gcm(ctx, s, k.handle, false, wrapped[:IVSize], wrapAAD(aad), wrapped[IVSize:])
		return err
	})
	switch {
	case err == nil:
		return plain, nil
	case isCKR(err, pkcs11.CKR_ENCRYPTED_DATA_INVALID), isCKR(err, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE),
		isCKR(err, pkcs11.CKR_GENERAL_ERROR):
		return nil, fmt.Errorf("%w under master key %s (token: %s)", ErrUnwrap, k.id, ckrName(err))
	}
	return nil, fmt.Errorf("unwrap under master key %s: %w", k.id, err)
}

func ckrName(err error) string {
	var e pkcs11.Error
	if errors.As(err, &e) {
		if _, name, ok := strings.Cut(e.Error(), ": CKR_"); ok {
			return "CKR_" + name
		}
	}
	return err.Error()
}

// String implements fmt.Stringer with the key ID only.
func (k *tokenKey) String() string { return "masterkey.Key{" + k.id + "}" }

// GoString implements fmt.GoStringer.
func (k *tokenKey) GoString() string { return k.String() }

// Format implements fmt.Formatter.
func (k *tokenKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// LogValue implements slog.LogValuer.
func (k *tokenKey) LogValue() slog.Value { return slog.StringValue(k.id) }

// String implements fmt.Stringer: the URI without its PIN and the key IDs.
func (r *tokenRing) String() string {
	ks := r.keys.Load()
	return fmt.Sprintf("masterkey.Keyring{%s, current: %s, keys: %v}", r.uri, ks.current.id, ks.ids())
}

// GoString implements fmt.GoStringer.
func (r *tokenRing) GoString() string { return r.String() }

// Format implements fmt.Formatter, so no verb reaches the URI's PIN.
func (r *tokenRing) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.String())) }

// LogValue implements slog.LogValuer.
func (r *tokenRing) LogValue() slog.Value {
	ks := r.keys.Load()
	return slog.GroupValue(slog.String("source", r.uri.String()),
		slog.String("current_key_id", ks.current.id), slog.Any("key_ids", ks.ids()))
}
