package tenantkey_test

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// counting is a master keyring that counts the unwraps its keys make.
type counting struct {
	masterkey.Keyring
	unwraps *atomic.Int64
}

func (r counting) Current() masterkey.Key { return countingKey{r.Keyring.Current(), r.unwraps} }

func (r counting) Get(id string) (masterkey.Key, bool) {
	k, ok := r.Keyring.Get(id)
	if !ok {
		return nil, false
	}
	return countingKey{k, r.unwraps}, true
}

type countingKey struct {
	masterkey.Key
	unwraps *atomic.Int64
}

func (k countingKey) Unwrap(wrapped, aad []byte) ([]byte, error) {
	k.unwraps.Add(1)
	return k.Key.Unwrap(wrapped, aad)
}

// TestRingOpensEachVersionOnce: a process that meets a tenant for the first time builds
// its key ring with one unwrap per stored version of the tenant's key (in a token, each
// unwrap is a call into it), and a reload of the ring reads them again.
func TestRingOpensEachVersionOnce(t *testing.T) {
	ctx := context.Background()
	pool, err := db.Open(ctx, testdb.URL(t), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `INSERT INTO tenants (id) VALUES ('acme')`)
	require.NoError(t, err)
	master, err := masterkey.Open("", t.TempDir(), os.Getenv, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = master.Close() })

	writer := &tenantkey.Keys{Pool: pool, Master: master}
	_, err = writer.Rotate(ctx, "acme") // versions 1 and 2
	require.NoError(t, err)

	var unwraps atomic.Int64
	reader := &tenantkey.Keys{Pool: pool, Master: counting{master, &unwraps}}
	ring, err := reader.Ring(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, ring.KeyIDs(), 2)
	require.EqualValues(t, 2, unwraps.Load(), "one unwrap per version")

	require.NoError(t, ring.Reload())
	require.EqualValues(t, 4, unwraps.Load(), "a reload reads the versions again")
}
