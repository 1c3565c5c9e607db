package envelope_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
)

var testAAD = envelope.AAD{Tenant: "acme", Owner: "cert:edge-client", Field: "keyPem"}

// newTestRing returns a ring over a fresh random key, and that key.
func newTestRing(t testing.TB) (*envelope.Ring, []byte) {
	t.Helper()
	key, err := envelope.GenerateKey()
	require.NoError(t, err)
	r, err := envelope.NewRing(key)
	require.NoError(t, err)
	return r, key
}

// requireEnvelopeErr asserts err is one of the package's documented blob errors.
func requireEnvelopeErr(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	require.True(t,
		errors.Is(err, envelope.ErrDecrypt) || errors.Is(err, envelope.ErrMalformed) || errors.Is(err, envelope.ErrUnknownKey),
		"unexpected error kind: %v", err)
}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	r, _ := newTestRing(t)
	tests := []struct {
		name  string
		plain []byte
	}{
		{"empty", []byte{}},
		{"short", []byte("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")},
		{"one MiB", bytes.Repeat([]byte{0xa5}, 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			blob, err := r.Seal(tt.plain, testAAD)
			require.NoError(t, err)
			require.Len(t, blob, len(tt.plain)+envelope.Overhead)
			if len(tt.plain) > 0 {
				require.NotContains(t, string(blob), string(tt.plain))
			}

			id, err := envelope.KeyID(blob)
			require.NoError(t, err)
			require.Equal(t, r.CurrentKeyID(), id)

			got, err := r.Open(blob, testAAD)
			require.NoError(t, err)
			require.Equal(t, tt.plain, got)

			again, err := r.Seal(tt.plain, testAAD)
			require.NoError(t, err)
			require.NotEqual(t, blob, again, "each seal uses a fresh data key and nonces")
		})
	}
}

func TestOpenRefusesOtherPlace(t *testing.T) {
	t.Parallel()
	r, _ := newTestRing(t)
	blob, err := r.Seal([]byte("secret"), envelope.AAD{Tenant: "acme", Owner: "ab", Field: "c"})
	require.NoError(t, err)

	tests := []struct {
		name string
		aad  envelope.AAD
	}{
		{"other tenant", envelope.AAD{Tenant: "globex", Owner: "ab", Field: "c"}},
		{"other owner", envelope.AAD{Tenant: "acme", Owner: "ax", Field: "c"}},
		{"other field", envelope.AAD{Tenant: "acme", Owner: "ab", Field: "certPem"}},
		{"boundary moved", envelope.AAD{Tenant: "acme", Owner: "a", Field: "bc"}},
		{"empty", envelope.AAD{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := r.Open(blob, tt.aad)
			require.ErrorIs(t, err, envelope.ErrDecrypt)
			_, err = r.Rewrap(blob, tt.aad)
			require.ErrorIs(t, err, envelope.ErrDecrypt)
		})
	}
}

func TestOpenRefusesEveryBitFlip(t *testing.T) {
	t.Parallel()
	r, _ := newTestRing(t)
	blob, err := r.Seal([]byte("private key bytes"), testAAD)
	require.NoError(t, err)

	for i := range len(blob) * 8 {
		flipped := bytes.Clone(blob)
		flipped[i/8] ^= 1 << (i % 8)
		got, err := r.Open(flipped, testAAD)
		requireEnvelopeErr(t, err)
		require.Nil(t, got)
	}
}

func TestOpenRefusesTruncatedAndExtended(t *testing.T) {
	t.Parallel()
	r, _ := newTestRing(t)
	blob, err := r.Seal([]byte("a value long enough to truncate inside the ciphertext"), testAAD)
	require.NoError(t, err)

	for n := range len(blob) {
		_, err := r.Open(blob[:n], testAAD)
		require.ErrorIs(t, err, envelope.ErrMalformed, "truncated to %d bytes", n)
		_, err = envelope.KeyID(blob[:n])
		require.ErrorIs(t, err, envelope.ErrMalformed)
		_, err = r.Rewrap(blob[:n], testAAD)
		require.ErrorIs(t, err, envelope.ErrMalformed)
	}
	_, err = r.Open(append(bytes.Clone(blob), 0), testAAD)
	require.ErrorIs(t, err, envelope.ErrMalformed)
}

func TestOpenUnknownKeyNamesIt(t *testing.T) {
	t.Parallel()
	sealer, _ := newTestRing(t)
	opener, _ := newTestRing(t)
	blob, err := sealer.Seal([]byte("x"), testAAD)
	require.NoError(t, err)

	_, err = opener.Open(blob, testAAD)
	require.ErrorIs(t, err, envelope.ErrUnknownKey)
	require.Contains(t, err.Error(), sealer.CurrentKeyID())
	_, err = opener.Rewrap(blob, testAAD)
	require.ErrorIs(t, err, envelope.ErrUnknownKey)
}

func TestRewrapMovesToCurrentKey(t *testing.T) {
	t.Parallel()
	oldRing, oldKey := newTestRing(t)
	plain := []byte("client key")
	blob, err := oldRing.Seal(plain, testAAD)
	require.NoError(t, err)

	newKey, err := envelope.GenerateKey()
	require.NoError(t, err)
	rotating, err := envelope.NewRing(newKey, oldKey)
	require.NoError(t, err)

	rewrapped, err := rotating.Rewrap(blob, testAAD)
	require.NoError(t, err)
	id, err := envelope.KeyID(rewrapped)
	require.NoError(t, err)
	require.Equal(t, envelope.KeyIDOf(newKey), id)
	require.NotEqual(t, oldRing.CurrentKeyID(), id)

	// The value ciphertext (length, nonce, ciphertext) is carried over byte for byte.
	const valueStart = envelope.Overhead - 16 - 12 - 4
	require.Equal(t, blob[valueStart:], rewrapped[valueStart:])

	// A ring without the old key opens it: only the new key is needed now.
	newOnly, err := envelope.NewRing(newKey)
	require.NoError(t, err)
	got, err := newOnly.Open(rewrapped, testAAD)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	// Rewrapping again is a no-op copy: a half-done rotation converges when rerun.
	again, err := rotating.Rewrap(rewrapped, testAAD)
	require.NoError(t, err)
	require.Equal(t, rewrapped, again)
	again[0] ^= 0xff
	require.NotEqual(t, rewrapped[0], again[0], "rewrap returns a copy, not the caller's slice")
}

func TestSealWithCurrentOpenWith(t *testing.T) {
	t.Parallel()
	r, key := newTestRing(t)
	header := []byte(`{"version":1,"tenant":"acme","generation":7}`)
	plain := []byte(`{"entries":[]}`)

	keyID, ct, err := r.SealWithCurrent(plain, header)
	require.NoError(t, err)
	require.Equal(t, envelope.KeyIDOf(key), keyID)

	got, err := r.OpenWith(keyID, ct, header)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	other, _ := newTestRing(t)
	tests := []struct {
		name   string
		keyID  string
		ct     []byte
		header []byte
		want   error
	}{
		{"other header", keyID, ct, []byte(`{"version":1,"tenant":"acme","generation":8}`), envelope.ErrDecrypt},
		{"flipped byte", keyID, flip(ct, len(ct)-1), header, envelope.ErrDecrypt},
		{"truncated", keyID, ct[:27], header, envelope.ErrMalformed},
		{"unknown key", other.CurrentKeyID(), ct, header, envelope.ErrUnknownKey},
		{"not a key ID", "../../etc/passwd", ct, header, envelope.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := r.OpenWith(tt.keyID, tt.ct, tt.header)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestDomainsAreSeparate(t *testing.T) {
	t.Parallel()
	r, _ := newTestRing(t)
	blob, err := r.Seal([]byte("v"), envelope.AAD{})
	require.NoError(t, err)
	// The wrapped DEK section (nonce + wrapped key) is a GCM output under the master key;
	// presented as a whole-file ciphertext with an empty header it must not open.
	const wrapStart, wrapEnd = 12, 12 + 12 + 48
	_, err = r.OpenWith(r.CurrentKeyID(), blob[wrapStart:wrapEnd], nil)
	require.ErrorIs(t, err, envelope.ErrDecrypt)
}

func TestKeyIDFormat(t *testing.T) {
	t.Parallel()
	// SHA-256("") starts e3b0c44298fc1c14: the ID is its first 8 bytes in lowercase hex.
	require.Equal(t, "e3b0c44298fc1c14", envelope.KeyIDOf(nil))
	r, key := newTestRing(t)
	require.Equal(t, envelope.KeyIDOf(key), r.CurrentKeyID())
	require.Len(t, r.CurrentKeyID(), 16)
	require.Equal(t, strings.ToLower(r.CurrentKeyID()), r.CurrentKeyID())
}

func TestNewRingRejectsBadKeys(t *testing.T) {
	t.Parallel()
	good, err := envelope.GenerateKey()
	require.NoError(t, err)
	_, err = envelope.NewRing(good[:31])
	require.Error(t, err)
	_, err = envelope.NewRing(good, make([]byte, 33))
	require.Error(t, err)

	r, err := envelope.NewRing(good, good)
	require.NoError(t, err)
	require.Equal(t, []string{envelope.KeyIDOf(good)}, r.KeyIDs())
	require.NoError(t, r.Reload(), "a ring without a data directory has nothing to reload")
}

func TestForget(t *testing.T) {
	t.Parallel()
	oldRing, oldKey := newTestRing(t)
	blob, err := oldRing.Seal([]byte("x"), testAAD)
	require.NoError(t, err)
	newKey, err := envelope.GenerateKey()
	require.NoError(t, err)
	r, err := envelope.NewRing(newKey, oldKey)
	require.NoError(t, err)

	require.Error(t, r.Forget(r.CurrentKeyID()))
	require.NoError(t, r.Forget(oldRing.CurrentKeyID()))
	require.False(t, r.Has(oldRing.CurrentKeyID()))
	require.True(t, r.Has(r.CurrentKeyID()))
	_, err = r.Open(blob, testAAD)
	require.ErrorIs(t, err, envelope.ErrUnknownKey)
	require.NoError(t, r.Forget("0000000000000000"))
}

func TestConcurrentSealOpenReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r, err := envelope.Load(dir, nil)
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				blob, err := r.Seal([]byte("v"), testAAD)
				if err == nil {
					_, err = r.Open(blob, testAAD)
				}
				if err == nil {
					_, err = r.Rewrap(blob, testAAD)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
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
		require.NoError(t, err)
	}
}

func flip(b []byte, i int) []byte {
	out := bytes.Clone(b)
	out[i] ^= 1
	return out
}
