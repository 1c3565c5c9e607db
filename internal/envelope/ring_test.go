package envelope_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
)

// recorder is a slog.Handler that keeps every record, for asserting on warnings.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (*recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recorder) WithGroup(string) slog.Handler      { return h }

// warnings returns the WARN records' attributes, keyed by name.
func (h *recorder) warnings() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.records {
		if r.Level != slog.LevelWarn {
			continue
		}
		attrs := map[string]string{"msg": r.Message}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

func writeKey(t *testing.T, path string) []byte {
	t.Helper()
	key, err := envelope.GenerateKey()
	require.NoError(t, err)
	require.NoError(t, envelope.WriteKeyFile(path, key))
	return key
}

func TestLoadCreatesKeyFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	r, err := envelope.Load(dir, nil)
	require.NoError(t, err)

	path := filepath.Join(dir, envelope.KeyFile)
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), info.Mode().Perm())

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, byte('\n'), raw[len(raw)-1])
	key, err := base64.StdEncoding.DecodeString(string(raw[:len(raw)-1]))
	require.NoError(t, err)
	require.Len(t, key, 32)
	require.Equal(t, envelope.KeyIDOf(key), r.CurrentKeyID())

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temp file is left behind")

	again, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	require.Equal(t, r.CurrentKeyID(), again.CurrentKeyID(), "a second boot reuses the key")
}

func TestLoadExistingRefusesToCreate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := envelope.LoadExisting(dir, nil)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Contains(t, err.Error(), filepath.Join(dir, envelope.KeyFile))
	_, err = os.Stat(filepath.Join(dir, envelope.KeyFile))
	require.ErrorIs(t, err, fs.ErrNotExist)

	key := writeKey(t, filepath.Join(dir, envelope.KeyFile))
	r, err := envelope.LoadExisting(dir, nil)
	require.NoError(t, err)
	require.Equal(t, envelope.KeyIDOf(key), r.CurrentKeyID())
}

func TestConcurrentFirstBootsAgreeOnOneKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			r, err := envelope.Load(dir, nil)
			errs[i] = err
			if err == nil {
				ids[i] = r.CurrentKeyID()
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, ids[0], ids[i])
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	key, err := envelope.ReadKeyFile(filepath.Join(dir, envelope.KeyFile))
	require.NoError(t, err)
	require.Equal(t, envelope.KeyIDOf(key), ids[0])
}

func TestWriteKeyFileRefusesOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, envelope.KeyFile)
	first := writeKey(t, path)

	second, err := envelope.GenerateKey()
	require.NoError(t, err)
	err = envelope.WriteKeyFile(path, second)
	require.ErrorIs(t, err, fs.ErrExist)

	got, err := envelope.ReadKeyFile(path)
	require.NoError(t, err)
	require.Equal(t, []byte(first), []byte(got))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	require.Error(t, envelope.WriteKeyFile(filepath.Join(dir, "short"), second[:16]))
}

func TestMalformedKeyFile(t *testing.T) {
	t.Parallel()
	const marker = "Zm9vYmFyYmF6cXV4"
	tests := []struct {
		name     string
		contents string
		why      string
	}{
		{"empty", "", "empty"},
		{"blank", " \n\n", "empty"},
		{"not base64", marker + "!!not*base64\n", "not valid base64"},
		{"too short", marker + "\n", "decodes to 12 bytes"},
		{"too long", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte(marker), 3)) + "\n", "decodes to 48 bytes"},
		{"huge", marker + string(bytes.Repeat([]byte("A"), 5000)), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, envelope.KeyFile)
			require.NoError(t, os.WriteFile(path, []byte(tt.contents), 0o600))

			_, err := envelope.ReadKeyFile(path)
			require.ErrorIs(t, err, envelope.ErrBadKeyFile)
			require.Contains(t, err.Error(), path)
			require.Contains(t, err.Error(), tt.why)
			require.NotContains(t, err.Error(), marker)

			for _, load := range []func(string, *slog.Logger) (*envelope.Ring, error){envelope.Load, envelope.LoadExisting} {
				_, err = load(dir, nil)
				require.ErrorIs(t, err, envelope.ErrBadKeyFile)
				require.Contains(t, err.Error(), path)
				require.NotContains(t, err.Error(), marker)
			}
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, tt.contents, string(got), "Load never replaces a bad key file")
		})
	}
}

func TestLooseKeyFileModeWarns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode fs.FileMode
		warn bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, true},
		{0o644, true},
		{0o604, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#o", tt.mode), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, envelope.KeyFile)
			writeKey(t, path)
			require.NoError(t, os.Chmod(path, tt.mode))

			rec := &recorder{}
			_, err := envelope.Load(dir, slog.New(rec))
			require.NoError(t, err, "a loose mode is a warning, not a failure")
			warns := rec.warnings()
			if !tt.warn {
				require.Empty(t, warns)
				return
			}
			require.Len(t, warns, 1)
			require.Equal(t, path, warns[0]["path"])
			require.Equal(t, fmt.Sprintf("%#o", tt.mode), warns[0]["mode"])
		})
	}
}

func TestNextKeyIsCurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	before, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	oldBlob, err := before.Seal([]byte("old"), testAAD)
	require.NoError(t, err)

	next := writeKey(t, filepath.Join(dir, envelope.NextKeyFile))
	r, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	require.Equal(t, envelope.KeyIDOf(next), r.CurrentKeyID())
	require.ElementsMatch(t, []string{before.CurrentKeyID(), envelope.KeyIDOf(next)}, r.KeyIDs())

	newBlob, err := r.Seal([]byte("new"), testAAD)
	require.NoError(t, err)
	id, err := envelope.KeyID(newBlob)
	require.NoError(t, err)
	require.Equal(t, envelope.KeyIDOf(next), id)

	got, err := r.Open(oldBlob, testAAD)
	require.NoError(t, err)
	require.Equal(t, "old", string(got))
	got, err = r.Open(newBlob, testAAD)
	require.NoError(t, err)
	require.Equal(t, "new", string(got))
}

func TestReloadPicksUpAnotherProcessesKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	running, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	firstID := running.CurrentKeyID()

	// Another replica starts a rotation and seals a value under the new key.
	next := writeKey(t, filepath.Join(dir, envelope.NextKeyFile))
	other, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	blob, err := other.Seal([]byte("v"), testAAD)
	require.NoError(t, err)

	_, err = running.Open(blob, testAAD)
	require.ErrorIs(t, err, envelope.ErrUnknownKey)
	require.Contains(t, err.Error(), envelope.KeyIDOf(next))

	require.NoError(t, running.Reload())
	got, err := running.Open(blob, testAAD)
	require.NoError(t, err)
	require.Equal(t, "v", string(got))
	require.Equal(t, envelope.KeyIDOf(next), running.CurrentKeyID())

	// The rotation finishes by moving the next key over the old one; the running ring
	// keeps the old key until asked to forget it.
	require.NoError(t, os.Rename(filepath.Join(dir, envelope.NextKeyFile), filepath.Join(dir, envelope.KeyFile)))
	require.NoError(t, running.Reload())
	require.Equal(t, envelope.KeyIDOf(next), running.CurrentKeyID())
	require.True(t, running.Has(firstID))
	require.True(t, running.Has(envelope.KeyIDOf(next)))
}

func TestReloadFailureKeepsRing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	id := r.CurrentKeyID()

	require.NoError(t, os.WriteFile(filepath.Join(dir, envelope.NextKeyFile), []byte("half"), 0o600))
	require.ErrorIs(t, r.Reload(), envelope.ErrBadKeyFile)
	require.Equal(t, id, r.CurrentKeyID())

	require.NoError(t, os.Remove(filepath.Join(dir, envelope.NextKeyFile)))
	require.NoError(t, os.Remove(filepath.Join(dir, envelope.KeyFile)))
	require.ErrorIs(t, r.Reload(), fs.ErrNotExist, "reload never creates a key")
	require.Equal(t, id, r.CurrentKeyID())
}

func TestNextKeyWithoutKeyFileFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeKey(t, filepath.Join(dir, envelope.NextKeyFile))
	_, err := envelope.Load(dir, nil)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(filepath.Join(dir, envelope.KeyFile))
	require.ErrorIs(t, err, fs.ErrNotExist, "no key is invented beside a next key")
}

func TestKeysNeverPrint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r, err := envelope.Load(dir, nil)
	require.NoError(t, err)
	key, err := envelope.ReadKeyFile(filepath.Join(dir, envelope.KeyFile))
	require.NoError(t, err)

	forbidden := []string{
		string(key),
		hex.EncodeToString(key),
		base64.StdEncoding.EncodeToString(key),
		fmt.Sprint([]byte(key)),
	}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		outputs = append(outputs, fmt.Sprintf(verb, key), fmt.Sprintf(verb, r))
	}
	for _, verb := range []string{"%x", "%X", "%d", "%q"} {
		outputs = append(outputs, fmt.Sprintf(verb, r))
	}
	var text, js bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&text, nil), slog.NewJSONHandler(&js, nil)} {
		slog.New(h).Info("loaded", "key", key, "ring", r)
	}
	outputs = append(outputs, text.String(), js.String())
	b, err := json.Marshal(key)
	require.NoError(t, err)
	outputs = append(outputs, string(b))

	for _, out := range outputs {
		for _, f := range forbidden {
			require.NotContains(t, out, f)
		}
	}
	require.Contains(t, fmt.Sprint(r), r.CurrentKeyID(), "a ring prints its key IDs")
	require.Contains(t, text.String(), r.CurrentKeyID())
}
