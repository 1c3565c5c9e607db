//go:build unix

package api_test

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/credfile"
)

// bigCredentials deploys a workspace of about n bytes to tenant and exports it, so the
// tenant's credentials.json is a few MB; it returns the file's size.
func bigCredentials(t *testing.T, env *apitest.Env, tenant string, n int) int64 {
	t.Helper()
	blob := make([]byte, n/2)
	_, _ = rand.Read(blob)
	doc := fmt.Sprintf(`{"flows":[{"id":"big","nodes":[{"id":"big-1","type":"function","func":%q}]}]}`, hex.EncodeToString(blob))
	res := env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/flows", Token: env.Token(t, tenant, "editor"), Body: doc})
	require.Equal(t, http.StatusOK, res.Status, "%.300s", res.Body)
	env.Export(t, tenant)
	info, err := os.Stat(credfile.Path(env.DataDir, tenant))
	require.NoError(t, err)
	return info.Size()
}

// heapInUse is the process's live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// TestSlowReadersDoNotPinTheFile: connections that ask for a multi-MB credentials file and
// then stop reading hold the server's handlers in the middle of the body; the server's
// heap must not hold a copy of the file for each of them.
func TestSlowReadersDoNotPinTheFile(t *testing.T) {
	// Not parallel: it measures the process's heap, which other tests would move.
	env := apitest.New(t)
	size := bigCredentials(t, env, "acme", 4<<20)
	// Straight to the server: the contract check in front of env.URL holds every answer whole.
	srv := httptest.NewServer(env.Server.Handler)
	t.Cleanup(srv.Close)
	token := env.Token(t, "acme", "runtime")
	// A small receive window, so the body cannot vanish into the kernel's buffers.
	dialer := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return cmp.Or(err, serr)
	}}

	before := heapInUse()
	const readers = 24
	for range readers {
		conn, err := dialer.Dial("tcp", srv.Listener.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		_, err = fmt.Fprintf(conn, "GET /api/v1/credentials HTTP/1.1\r\nHost: loopze\r\nAuthorization: Bearer %s\r\n\r\n", token)
		require.NoError(t, err)
		// The status line and headers have come: the handler is writing the body. Read no more.
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		var head []byte
		buf := make([]byte, 256)
		for !bytes.Contains(head, []byte("\r\n\r\n")) {
			n, err := conn.Read(buf)
			require.NoError(t, err, "the answer's headers")
			head = append(head, buf[:n]...)
		}
		require.Contains(t, string(head), "HTTP/1.1 200 OK")
	}
	grown := heapInUse() - before
	t.Logf("file %d bytes; heap grew by %d bytes with %d readers stalled", size, grown, readers)
	require.Less(t, grown, readers*size/8, "the heap holds copies of the file: %d bytes for %d readers of %d", grown, readers, size)

	// The stalled readers hold nothing back: the file is still served whole.
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/credentials", Token: token})
	require.Equal(t, http.StatusOK, res.Status)
	onDisk, err := os.ReadFile(credfile.Path(env.DataDir, "acme"))
	require.NoError(t, err)
	require.Equal(t, onDisk, res.Body)
}
