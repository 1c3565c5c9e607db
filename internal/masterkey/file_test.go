package masterkey_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/masterkey"
)

// lockedBuffer is a log sink safe to read while the ring may still be logging.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func captureLogs() (*slog.Logger, *lockedBuffer) {
	var b lockedBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

func openFile(t *testing.T, uri, dataDir string, env map[string]string) (masterkey.Keyring, *lockedBuffer) {
	t.Helper()
	logger, logs := captureLogs()
	r, err := masterkey.Open(uri, dataDir, func(k string) string { return env[k] }, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r, logs
}

func keyFileID(t *testing.T, path string) string {
	t.Helper()
	key, err := envelope.ReadKeyFile(path)
	require.NoError(t, err)
	return envelope.KeyIDOf(key)
}

func requireMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, info.Mode().Perm(), path)
}

// TestFileKeyFirstBootKeepsTodaysIDs: file: creates loopze.key (0600) on first boot, and a
// key file's ID is the one the envelope gives it, so existing installs keep their IDs.
func TestFileKeyFirstBootKeepsTodaysIDs(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	r, logs := openFile(t, "file:", dataDir, nil)
	keyPath := filepath.Join(dataDir, envelope.KeyFile)
	requireMode(t, keyPath, 0o600)
	id := r.Current().ID()
	require.Equal(t, keyFileID(t, keyPath), id)
	require.Contains(t, logs.String(), "created master key")

	ring, err := envelope.LoadExisting(dataDir, nil)
	require.NoError(t, err)
	require.Equal(t, ring.CurrentKeyID(), id, "the envelope and the master keyring name the key alike")

	again, _ := openFile(t, "", dataDir, nil)
	require.Equal(t, id, again.Current().ID(), "an empty URI is file:")
	require.Equal(t, []string{id}, again.IDs())
}

// TestFileKeyWrap: a round trip, the AAD bound, every altered or truncated value refused.
func TestFileKeyWrap(t *testing.T) {
	t.Parallel()
	r, _ := openFile(t, "file:", t.TempDir(), nil)
	k := r.Current()
	tenantKey := make([]byte, 32)
	_, _ = rand.Read(tenantKey)
	aad := []byte("tenant:acme")

	w, err := k.Wrap(tenantKey, aad)
	require.NoError(t, err)
	require.Len(t, w, masterkey.Overhead+32)
	w2, err := k.Wrap(tenantKey, aad)
	require.NoError(t, err)
	require.NotEqual(t, w[:masterkey.IVSize], w2[:masterkey.IVSize])
	plain, err := k.Unwrap(w, aad)
	require.NoError(t, err)
	require.Equal(t, tenantKey, plain)

	_, err = k.Unwrap(w, []byte("tenant:globex"))
	require.ErrorIs(t, err, masterkey.ErrUnwrap)
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 0x80
		_, err := k.Unwrap(bad, aad)
		require.ErrorIs(t, err, masterkey.ErrUnwrap, "byte %d altered", i)
	}
	for _, n := range []int{0, masterkey.Overhead, len(w) - 1} {
		_, err := k.Unwrap(w[:n], aad)
		require.ErrorIs(t, err, masterkey.ErrUnwrap)
	}
	_, err = k.Wrap(nil, aad)
	require.Error(t, err)
	_, err = k.Wrap(make([]byte, masterkey.MaxWrap+1), aad)
	require.Error(t, err)
}

// TestFileKeyReadsTodaysRotationLayout: loopze.key beside loopze.key.next, as a rotation of
// the envelope leaves them, is read as the envelope reads it: the next key is current.
func TestFileKeyReadsTodaysRotationLayout(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	ring, err := envelope.Load(dataDir, nil)
	require.NoError(t, err)
	next, err := envelope.GenerateKey()
	require.NoError(t, err)
	require.NoError(t, envelope.WriteKeyFile(filepath.Join(dataDir, envelope.NextKeyFile), next))
	require.NoError(t, ring.Reload())

	r, _ := openFile(t, "file:", dataDir, nil)
	require.Equal(t, ring.CurrentKeyID(), r.Current().ID())
	require.Equal(t, envelope.KeyIDOf(next), r.Current().ID())
	require.Equal(t, ring.KeyIDs(), r.IDs())
}

// TestFileRotation: Next writes loopze.key.next (0600) and makes it current, again returns
// it; another process opening the directory agrees; Retire refuses the current key, then
// renames the next key over loopze.key, after which the old key is gone from disk and a
// value rewrapped under the new one unwraps after reopening.
func TestFileRotation(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	keyPath, nextPath := filepath.Join(dataDir, envelope.KeyFile), filepath.Join(dataDir, envelope.NextKeyFile)
	r, _ := openFile(t, "file:", dataDir, nil)
	replica, _ := openFile(t, "file:", dataDir, nil)
	k1 := r.Current()
	aad := []byte("tenant:acme")
	tenantKey := make([]byte, 32)
	_, _ = rand.Read(tenantKey)
	w1, err := k1.Wrap(tenantKey, aad)
	require.NoError(t, err)

	k2, err := r.Next()
	require.NoError(t, err)
	require.NotEqual(t, k1.ID(), k2.ID())
	requireMode(t, nextPath, 0o600)
	require.Equal(t, k2.ID(), keyFileID(t, nextPath))
	require.Equal(t, k1.ID(), keyFileID(t, keyPath), "loopze.key is untouched until the rotation ends")
	require.Equal(t, k2.ID(), r.Current().ID())
	again, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, k2.ID(), again.ID())

	_, ok := replica.Get(k2.ID())
	require.False(t, ok)
	require.NoError(t, replica.Reload())
	require.Equal(t, k2.ID(), replica.Current().ID(), "a reload finds the next key")
	old, ok := replica.Get(k1.ID())
	require.True(t, ok)
	plain, err := old.Unwrap(w1, aad)
	require.NoError(t, err)
	w2, err := replica.Current().Wrap(plain, aad)
	require.NoError(t, err)

	require.ErrorIs(t, r.Retire(k2.ID()), masterkey.ErrCurrent)
	require.NoError(t, r.Retire(k1.ID()))
	_, err = os.Stat(nextPath)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Equal(t, k2.ID(), keyFileID(t, keyPath))
	requireMode(t, keyPath, 0o600)
	require.Equal(t, []string{k2.ID()}, r.IDs())

	// The replica keeps the old key it knows until it retires it too, which then touches
	// no file: the rotation's rename was done.
	require.NoError(t, replica.Reload())
	require.ElementsMatch(t, []string{k1.ID(), k2.ID()}, replica.IDs())
	require.NoError(t, replica.Retire(k1.ID()))
	require.Equal(t, []string{k2.ID()}, replica.IDs())
	require.Equal(t, k2.ID(), keyFileID(t, keyPath))

	fresh, _ := openFile(t, "file:", dataDir, nil)
	require.Equal(t, []string{k2.ID()}, fresh.IDs())
	got, err := fresh.Current().Unwrap(w2, aad)
	require.NoError(t, err)
	require.Equal(t, tenantKey, got)
	ring, err := envelope.LoadExisting(dataDir, nil)
	require.NoError(t, err)
	require.Equal(t, k2.ID(), ring.CurrentKeyID())
}

// TestFileRotationCrashStates: what a crash can leave between the steps opens cleanly. A
// temp file of a Next that died before its link is ignored and the next Next succeeds; a
// next key written but not yet retired over is current after a restart.
func TestFileRotationCrashStates(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	nextPath := filepath.Join(dataDir, envelope.NextKeyFile)
	first, _ := openFile(t, "file:", dataDir, nil)
	k1 := first.Current().ID()

	stray := filepath.Join(dataDir, durable.TempPrefix(nextPath)+"123")
	require.NoError(t, os.WriteFile(stray, []byte("half a ke"), 0o600))
	r, _ := openFile(t, "file:", dataDir, nil)
	require.Equal(t, k1, r.Current().ID())
	k2, err := r.Next()
	require.NoError(t, err)

	restarted, _ := openFile(t, "file:", dataDir, nil)
	require.Equal(t, k2.ID(), restarted.Current().ID())
	require.ElementsMatch(t, []string{k1, k2.ID()}, restarted.IDs())
	again, err := restarted.Next()
	require.NoError(t, err)
	require.Equal(t, k2.ID(), again.ID(), "a rotation run again after a crash converges on the same key")

	require.NoError(t, os.Remove(filepath.Join(dataDir, envelope.KeyFile)))
	_, err = masterkey.Open("file:", dataDir, nil, nil)
	require.ErrorContains(t, err, "is missing", "a next key without loopze.key is damage, not a first boot")
}

// TestFileKeyRefusesLooseModes: loopze.key or loopze.key.next readable by group or others
// is refused with a line saying how to fix it, as the server refuses them at start.
func TestFileKeyRefusesLooseModes(t *testing.T) {
	t.Parallel()
	for _, name := range []string{envelope.KeyFile, envelope.NextKeyFile} {
		dataDir := t.TempDir()
		key, err := envelope.GenerateKey()
		require.NoError(t, err)
		require.NoError(t, envelope.WriteKeyFile(filepath.Join(dataDir, envelope.KeyFile), key))
		if name == envelope.NextKeyFile {
			require.NoError(t, envelope.WriteKeyFile(filepath.Join(dataDir, name), key))
		}
		path := filepath.Join(dataDir, name)
		require.NoError(t, os.Chmod(path, 0o640))
		_, err = masterkey.Open("file:", dataDir, nil, nil)
		require.ErrorContains(t, err, "chmod 600 "+path)
		require.NotContains(t, err.Error(), base64.StdEncoding.EncodeToString(key))
	}
}

// TestFileKeyURIs: file:/abs/path is that file with its next key beside it; anything else
// than file: or pkcs11: is refused without echoing what may be a secret.
func TestFileKeyURIs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "master.key")
	r, _ := openFile(t, "file:"+path, t.TempDir(), nil)
	require.Equal(t, keyFileID(t, path), r.Current().ID())
	k2, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, k2.ID(), keyFileID(t, path+".next"))
	r3, _ := openFile(t, "file://"+path, t.TempDir(), nil)
	require.Equal(t, k2.ID(), r3.Current().ID())

	for _, bad := range []string{"file:relative/key", "file://otherhost/key", "vault://s3cr3t@host/key", "s3cr3t"} {
		_, err := masterkey.Open(bad, t.TempDir(), nil, nil)
		require.ErrorIs(t, err, masterkey.ErrBadURI, bad)
		require.NotContains(t, err.Error(), "s3cr3t")
	}
}

// credentialDir makes a systemd credential directory holding key as loopze.key, with the
// mode systemd gives it (0400, shown as 0440 when an ACL grants the service user).
func credentialDir(t *testing.T, key []byte) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, envelope.KeyFile)
	require.NoError(t, envelope.WriteKeyFile(path, key))
	require.NoError(t, os.Chmod(path, 0o440))
	return dir
}

// TestCredentialKey: with $CREDENTIALS_DIRECTORY holding loopze.key, file: reads the key
// from there and writes nothing in the data directory; a rotation writes its next key in
// the data directory, and retiring the credential's key says how the operator re-encrypts;
// once the credential carries the new key, a leftover plaintext copy is warned about, and a
// loopze.key in the data directory that differs from the credential is refused.
func TestCredentialKey(t *testing.T) {
	t.Parallel()
	k1, err := envelope.GenerateKey()
	require.NoError(t, err)
	creds := credentialDir(t, k1)
	env := map[string]string{masterkey.CredentialsEnv: creds}
	dataDir := t.TempDir()
	keyPath, nextPath := filepath.Join(dataDir, envelope.KeyFile), filepath.Join(dataDir, envelope.NextKeyFile)

	r, logs := openFile(t, "file:", dataDir, env)
	require.Equal(t, envelope.KeyIDOf(k1), r.Current().ID())
	require.Contains(t, logs.String(), "systemd credential")
	_, err = os.Stat(keyPath)
	require.ErrorIs(t, err, fs.ErrNotExist, "no key file is written beside a credential")

	k2, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, k2.ID(), keyFileID(t, nextPath))
	requireMode(t, nextPath, 0o600)
	err = r.Retire(envelope.KeyIDOf(k1))
	require.ErrorIs(t, err, masterkey.ErrReadOnly)
	require.ErrorContains(t, err, "systemd-creds encrypt")
	require.Equal(t, envelope.KeyIDOf(k1), keyFileID(t, filepath.Join(creds, envelope.KeyFile)))
	require.Equal(t, k2.ID(), keyFileID(t, nextPath), "a refused retire changes no file")

	// The operator encrypts loopze.key.next into the credential and restarts.
	next, err := envelope.ReadKeyFile(nextPath)
	require.NoError(t, err)
	env[masterkey.CredentialsEnv] = credentialDir(t, next)
	after, logs := openFile(t, "file:", dataDir, env)
	require.Equal(t, []string{k2.ID()}, after.IDs())
	require.Contains(t, logs.String(), "delete the plaintext copy")
	require.NoError(t, os.Remove(nextPath))
	clean, logs := openFile(t, "file:", dataDir, env)
	require.Equal(t, k2.ID(), clean.Current().ID())
	require.NotContains(t, logs.String(), "level=WARN")

	require.NoError(t, envelope.WriteKeyFile(keyPath, next))
	_, logs = openFile(t, "file:", dataDir, env)
	require.Contains(t, logs.String(), "plaintext copy of the master key")
	require.NoError(t, os.Remove(keyPath))
	require.NoError(t, envelope.WriteKeyFile(keyPath, k1))
	_, err = masterkey.Open("file:", dataDir, func(k string) string { return env[k] }, nil)
	require.ErrorContains(t, err, "but the systemd credential")

	_, err = masterkey.Open("file:"+keyPath, dataDir, func(k string) string { return env[k] }, nil)
	require.ErrorIs(t, err, masterkey.ErrBadURI, "a key file and a credential at once is ambiguous")
}

// TestFileKeyPrintsNoKey: no verb and no log line of a ring or key carries key material.
func TestFileKeyPrintsNoKey(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	r, logs := openFile(t, "file:", dataDir, nil)
	_, err := r.Next()
	require.NoError(t, err)
	logger, _ := captureLogs()
	logger.Info("ring", "ring", r, "key", r.Current())
	printed := fmt.Sprintf("%v %+v %#v %x %s %v %+v %#v %x", r, r, r, r, r.Current(), r.Current(), r.Current(), r.Current(), r.Current()) + logs.String()
	for _, name := range []string{envelope.KeyFile, envelope.NextKeyFile} {
		key, err := envelope.ReadKeyFile(filepath.Join(dataDir, name))
		require.NoError(t, err)
		require.NotContains(t, printed, base64.StdEncoding.EncodeToString(key))
		require.NotContains(t, printed, hex.EncodeToString(key))
	}
	require.Contains(t, printed, r.Current().ID())
}

// TestFileKeyConcurrentUse: wraps and unwraps run while another goroutine rotates and
// reloads; every value unwraps under the key that wrapped it.
func TestFileKeyConcurrentUse(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	r, _ := openFile(t, "file:", dataDir, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 8 {
		wg.Go(func() {
			for range 200 {
				k := r.Current()
				w, err := k.Wrap([]byte("0123456789abcdef0123456789abcdef"), nil)
				if err == nil {
					_, err = k.Unwrap(w, nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		if _, err := r.Next(); err != nil {
			errs <- err
		}
		for range 20 {
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
	require.NoError(t, r.Close())
	_, err := r.Current().Wrap([]byte("k"), nil)
	require.ErrorIs(t, err, masterkey.ErrClosed)
	require.ErrorIs(t, r.Reload(), masterkey.ErrClosed)
}
