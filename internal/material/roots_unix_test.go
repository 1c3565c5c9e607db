//go:build unix

package material_test

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
)

// TestReadFileFIFO proves a FIFO is refused without blocking: a plain open would wait for a
// writer forever and hang the connection init that asked for the file.
func TestReadFileFIFO(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "cert.pem")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	_, err := material.Roots(nil).ReadFile(material.DefaultTenant, fifo)
	require.ErrorIs(t, err, material.ErrNotRegular)
	require.Contains(t, err.Error(), "a FIFO")
}
