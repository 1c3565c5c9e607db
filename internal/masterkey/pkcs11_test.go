//go:build cgo

package masterkey_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/masterkey"
)

func openToken(t *testing.T, uri string) (masterkey.Keyring, *lockedBuffer) {
	t.Helper()
	logger, logs := captureLogs()
	r, err := masterkey.Open(uri, t.TempDir(), nil, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r, logs
}

func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

// TestTokenWrapRoundTrip: a tenant key wrapped in the token comes back under the same
// additional data; every wrap draws its own IV; the ring prints the URI without the PIN.
func TestTokenWrapRoundTrip(t *testing.T) {
	h := softHSM(t)
	tok := h.newToken(t)
	h.keygen(t, tok, "master", "01")
	r, logs := openToken(t, h.uri(tok, "master"))

	k := r.Current()
	require.Regexp(t, `^[0-9a-f]{16}$`, k.ID())
	require.Equal(t, []string{k.ID()}, r.IDs())
	got, ok := r.Get(k.ID())
	require.True(t, ok)
	require.Equal(t, k.ID(), got.ID())

	tenantKey := randomKey(t)
	aad := []byte("tenant:acme")
	w1, err := k.Wrap(tenantKey, aad)
	require.NoError(t, err)
	require.Len(t, w1, masterkey.IVSize+32+masterkey.TagSize)
	require.NotEqual(t, make([]byte, masterkey.IVSize), w1[:masterkey.IVSize])
	w2, err := k.Wrap(tenantKey, aad)
	require.NoError(t, err)
	require.NotEqual(t, w1[:masterkey.IVSize], w2[:masterkey.IVSize], "each wrap draws a fresh IV")

	for _, w := range [][]byte{w1, w2} {
		plain, err := k.Unwrap(w, aad)
		require.NoError(t, err)
		require.Equal(t, tenantKey, plain)
	}

	_, err = k.Wrap(nil, aad)
	require.Error(t, err)
	_, err = k.Wrap(make([]byte, masterkey.MaxWrap+1), aad)
	require.Error(t, err)

	printed := fmt.Sprintf("%v %+v %#v %s %v", r, r, k, k, r.Current())
	require.Contains(t, printed, k.ID())
	require.Contains(t, printed, "pin-value=[redacted]")
	require.NotContains(t, printed+logs.String(), "="+userPIN)
}

// TestTokenUnwrapRefusesTampering: another AAD, any altered byte, a truncated value and a
// value wrapped under another key are all ErrUnwrap, and the sessions still serve after.
func TestTokenUnwrapRefusesTampering(t *testing.T) {
	h := softHSM(t)
	tok := h.newToken(t)
	h.keygen(t, tok, "master", "01")
	h.keygen(t, tok, "other", "01")
	r, _ := openToken(t, h.uri(tok, "master"))
	other, _ := openToken(t, h.uri(tok, "other"))

	k := r.Current()
	tenantKey := randomKey(t)
	aad := []byte("tenant:acme")
	w, err := k.Wrap(tenantKey, aad)
	require.NoError(t, err)

	_, err = k.Unwrap(w, []byte("tenant:globex"))
	require.ErrorIs(t, err, masterkey.ErrUnwrap, "a tenant key copied to another tenant does not unwrap")
	_, err = k.Unwrap(w, nil)
	require.ErrorIs(t, err, masterkey.ErrUnwrap)
	for _, i := range []int{0, masterkey.IVSize - 1, masterkey.IVSize, masterkey.IVSize + 31, len(w) - 1} {
		bad := bytes.Clone(w)
		bad[i] ^= 0x01
		_, err := k.Unwrap(bad, aad)
		require.ErrorIs(t, err, masterkey.ErrUnwrap, "byte %d altered", i)
	}
	for _, n := range []int{0, masterkey.Overhead, len(w) - 1} {
		_, err := k.Unwrap(w[:n], aad)
		require.ErrorIs(t, err, masterkey.ErrUnwrap, "truncated to %d bytes", n)
	}
	_, err = other.Current().Unwrap(w, aad)
	require.ErrorIs(t, err, masterkey.ErrUnwrap, "another key does not unwrap it")
	require.NotEqual(t, k.ID(), other.Current().ID())

	for range 8 { // more than the pool's sessions: none was left in a failed operation
		plain, err := k.Unwrap(w, aad)
		require.NoError(t, err)
		require.Equal(t, tenantKey, plain)
	}
}

// kcv is the key check value the package documents as a token key's ID, computed here
// from known key bytes.
func kcv(t *testing.T, key []byte) string {
	t.Helper()
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	gcm, err := cipher.NewGCM(block)
	require.NoError(t, err)
	tag := gcm.Seal(nil, make([]byte, 12), nil, []byte("loopze/masterkey/v1/key-id\x00"))
	return hex.EncodeToString(tag[:8])
}

// TestTokenKeyIDIsTheKeysMaterial: the same key bytes under two labels, CKA_IDs and tokens
// have one ID, the check value of the material, across reopening; and a file key of those
// bytes opens what the token wraps and the other way round: one wrap format in both stores.
func TestTokenKeyIDIsTheKeysMaterial(t *testing.T) {
	h := softHSM(t)
	material := randomKey(t)
	tokA, tokB := h.newToken(t), h.newToken(t)
	h.importKey(t, tokA, "master", "01", material)
	h.importKey(t, tokB, "elsewhere", "09", material)

	a, _ := openToken(t, h.uri(tokA, "master"))
	b, _ := openToken(t, h.uri(tokB, "elsewhere"))
	want := kcv(t, material)
	require.Equal(t, want, a.Current().ID())
	require.Equal(t, want, b.Current().ID())
	require.NoError(t, a.Close())
	again, _ := openToken(t, h.uri(tokA, "master"))
	require.Equal(t, want, again.Current().ID(), "stable across reopening")

	dataDir := t.TempDir()
	line := base64.StdEncoding.EncodeToString(material) + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "loopze.key"), []byte(line), 0o600))
	file, err := masterkey.Open("file:", dataDir, nil, nil)
	require.NoError(t, err)
	defer file.Close()

	tenantKey, aad := randomKey(t), []byte("tenant:acme")
	fromFile, err := file.Current().Wrap(tenantKey, aad)
	require.NoError(t, err)
	plain, err := again.Current().Unwrap(fromFile, aad)
	require.NoError(t, err)
	require.Equal(t, tenantKey, plain)
	fromToken, err := b.Current().Wrap(tenantKey, aad)
	require.NoError(t, err)
	plain, err = file.Current().Unwrap(fromToken, aad)
	require.NoError(t, err)
	require.Equal(t, tenantKey, plain)
}

// TestTokenRotation: Next generates the next CKA_ID in the token, non-extractable and
// sensitive, and makes it current for this process and any that opens the token; running
// it again during the rotation returns the same key; a wrap under key 1 still unwraps;
// Retire refuses the current key and destroys the old one, after which only the new key
// is found, under the same ID, by a fresh open.
func TestTokenRotation(t *testing.T) {
	h := softHSM(t)
	tok := h.newToken(t)
	h.keygen(t, tok, "master", "01")
	uri := h.uri(tok, "master")
	r, _ := openToken(t, uri)

	k1 := r.Current()
	tenantKey, aad := randomKey(t), []byte("tenant:acme")
	w1, err := k1.Wrap(tenantKey, aad)
	require.NoError(t, err)

	k2, err := r.Next()
	require.NoError(t, err)
	require.NotEqual(t, k1.ID(), k2.ID())
	require.Equal(t, k2.ID(), r.Current().ID())
	require.ElementsMatch(t, []string{k1.ID(), k2.ID()}, r.IDs())
	listing := h.listKeys(t, tok)
	require.Equal(t, 2, strings.Count(listing, "label:      master"), listing)
	require.Contains(t, listing, "ID:         02")
	new := listing[strings.Index(listing, "ID:         02"):]
	require.Contains(t, new, "never extractable")
	require.Contains(t, new, "sensitive")

	again, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, k2.ID(), again.ID(), "a rotation under way is not started twice")
	require.Equal(t, 2, strings.Count(h.listKeys(t, tok), "label:      master"))

	replica, _ := openToken(t, uri)
	require.Equal(t, k2.ID(), replica.Current().ID(), "another process agrees on the current key")
	old, ok := replica.Get(k1.ID())
	require.True(t, ok)
	plain, err := old.Unwrap(w1, aad)
	require.NoError(t, err, "a wrap under key 1 unwraps during the rotation")
	require.Equal(t, tenantKey, plain)
	w2, err := replica.Current().Wrap(plain, aad)
	require.NoError(t, err)

	require.ErrorIs(t, r.Retire(k2.ID()), masterkey.ErrCurrent)
	require.NoError(t, r.Retire(k1.ID()))
	require.Equal(t, []string{k2.ID()}, r.IDs())
	_, ok = r.Get(k1.ID())
	require.False(t, ok)
	require.NoError(t, r.Retire(k1.ID()), "retiring a key no longer held is not an error")
	require.NoError(t, replica.Reload())
	require.Equal(t, []string{k2.ID()}, replica.IDs(), "a reload drops a key destroyed by another process")

	fresh, _ := openToken(t, uri)
	require.Equal(t, []string{k2.ID()}, fresh.IDs())
	plain, err = fresh.Current().Unwrap(w2, aad)
	require.NoError(t, err)
	require.Equal(t, tenantKey, plain)

	k3, err := fresh.Next()
	require.NoError(t, err)
	require.NotEqual(t, k2.ID(), k3.ID())
	require.Contains(t, h.listKeys(t, tok), "ID:         03")
}

// TestTokenPinnedID: a URI naming one key by id holds that key alone and cannot rotate.
func TestTokenPinnedID(t *testing.T) {
	h := softHSM(t)
	tok := h.newToken(t)
	h.keygen(t, tok, "master", "01")
	h.keygen(t, tok, "master", "02")
	r, _ := openToken(t, strings.Replace(h.uri(tok, "master"), ";object=master", ";object=master;id=%01", 1))
	all, _ := openToken(t, h.uri(tok, "master"))
	require.Len(t, r.IDs(), 1)
	require.Len(t, all.IDs(), 2)
	require.NotEqual(t, all.Current().ID(), r.Current().ID(), "the highest CKA_ID is current; the URI pinned 01")
	_, err := r.Next()
	require.ErrorIs(t, err, masterkey.ErrReadOnly)
}

// requireOneLine checks what an operator sees when a start fails: one line, naming the URI
// and the cause, with no PIN in it.
func requireOneLine(t *testing.T, err error, sentinel error, pins ...string) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, sentinel)
	msg := err.Error()
	require.NotContains(t, msg, "\n")
	require.Contains(t, msg, "pkcs11:")
	for _, pin := range pins {
		require.NotContains(t, msg, pin)
	}
}

// TestTokenOpenErrors: a wrong PIN, an unreadable PIN file, a missing object and a missing
// token each fail Open with one line naming the URI, never the PIN, and no panic.
func TestTokenOpenErrors(t *testing.T) {
	h := softHSM(t)
	tok := h.newToken(t)
	h.keygen(t, tok, "master", "01")
	good := h.uri(tok, "master")

	for _, c := range []struct {
		name     string
		uri      string
		sentinel error
		want     string
	}{
		{"wrong PIN", strings.Replace(good, "pin-value="+userPIN, "pin-value=9999", 1), masterkey.ErrLogin, "CKR_PIN_INCORRECT"},
		{"wrong PIN in the PIN file", h.uriPINFile(t, tok, "master", "4321"), masterkey.ErrLogin, "CKR_PIN_INCORRECT"},
		{"missing PIN file", strings.Replace(good, "pin-value="+userPIN, "pin-source=file:/nonexistent/pin", 1), masterkey.ErrLogin, "no such file"},
		{"missing object", h.uri(tok, "absent"), masterkey.ErrNoKey, `no AES secret key labelled "absent"`},
		{"missing token", h.uri("no-such-token", "master"), masterkey.ErrNoToken, "no initialised token matches"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := masterkey.Open(c.uri, t.TempDir(), nil, nil)
			require.Nil(t, r)
			requireOneLine(t, err, c.sentinel, "=9999", "4321", "="+userPIN)
			require.Contains(t, err.Error(), c.want)
		})
	}

	// The PIN file as a systemd credential would hold it opens the ring.
	r, err := masterkey.Open(h.uriPINFile(t, tok, "master", userPIN), t.TempDir(), nil, nil)
	require.NoError(t, err)
	require.NoError(t, r.Close())
}

// TestTokenModuleErrors: a module path that does not exist, is a directory or is not a
// PKCS#11 library fails Open with one line, without SoftHSM installed too.
func TestTokenModuleErrors(t *testing.T) {
	dir := t.TempDir()
	notLib := filepath.Join(dir, "libnot-pkcs11.so")
	require.NoError(t, os.WriteFile(notLib, []byte("not an ELF file\n"), 0o644))
	for _, c := range []struct{ module, want string }{
		{"/nonexistent/libsofthsm2.so", "no such file"},
		{dir, "not a regular file"},
		{notLib, "not a PKCS#11 library"},
	} {
		uri := "pkcs11:token=loopze;object=master?module-path=" + c.module + "&pin-value=2468"
		r, err := masterkey.Open(uri, t.TempDir(), nil, nil)
		require.Nil(t, r)
		requireOneLine(t, err, masterkey.ErrModule, "2468")
		require.Contains(t, err.Error(), c.want)
		require.Contains(t, err.Error(), "pin-value=[redacted]")
	}
}

// TestTokenConcurrentUse: many goroutines wrap, unwrap and fail to unwrap at once while
// another reloads the ring; then Close, with operations still starting, makes them fail
// with ErrClosed and nothing else.
func TestTokenConcurrentUse(t *testing.T) {
	h := softHSM(t)
	tok := h.newToken(t)
	h.keygen(t, tok, "master", "01")
	logger, _ := captureLogs()
	r, err := masterkey.Open(h.uri(tok, "master"), t.TempDir(), nil, logger)
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			aad := []byte(fmt.Sprintf("tenant:%d", g))
			for range 40 {
				key := make([]byte, 32)
				_, _ = rand.Read(key)
				w, err := r.Current().Wrap(key, aad)
				if err != nil {
					errs <- err
					return
				}
				plain, err := r.Current().Unwrap(w, aad)
				if err != nil || !bytes.Equal(plain, key) {
					errs <- fmt.Errorf("round trip: %v", err)
					return
				}
				if _, err := r.Current().Unwrap(w, []byte("elsewhere")); !errors.Is(err, masterkey.ErrUnwrap) {
					errs <- fmt.Errorf("other aad: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 10 {
			if err := r.Reload(); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	k := r.Current()
	w, err := k.Wrap(randomKey(t), nil)
	require.NoError(t, err)
	started := make(chan struct{}, 4)
	var after sync.WaitGroup
	for range 4 {
		after.Go(func() {
			for i := 0; ; i++ {
				_, err := k.Unwrap(w, nil)
				if i == 0 {
					started <- struct{}{}
				}
				if err != nil {
					if !errors.Is(err, masterkey.ErrClosed) {
						t.Errorf("after close: %v", err)
					}
					return
				}
			}
		})
	}
	for range 4 {
		<-started
	}
	require.NoError(t, r.Close())
	after.Wait()
	_, err = k.Wrap(randomKey(t), nil)
	require.ErrorIs(t, err, masterkey.ErrClosed)
	require.NoError(t, r.Close(), "closing twice is harmless")
}
