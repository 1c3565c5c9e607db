package nodetls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"

	"github.com/loopze/certstore/internal/material"
)

// MaxFileSize bounds a credentials file, read from disk by a Store or downloaded by Sync:
// 256 MiB. A tenant of ten thousand entries is a few MB, so a file over it is not one the
// store wrote; it is refused from its size, before it is read.
const MaxFileSize = 256 << 20

// readChunk is how much one read takes before the context is looked at again.
const readChunk = 4 << 20

// errNotRegular means the path is a FIFO, device, socket or directory, which no export
// writes; a FIFO would block a plain open, a device would never end.
var errNotRegular = errors.New("not a regular file")

// readFile reads the regular file at path, of at most limit bytes, and stops when ctx
// ends. It opens with O_NONBLOCK, so a FIFO put in the file's place does not wait for a
// writer, and checks what it opened on the descriptor: not a regular file is
// errNotRegular, a size over limit (at open or while reading, if it grows) is ErrTooLarge.
// Errors opening it are the os errors.
func readFile(ctx context.Context, path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w (%s)", errNotRegular, material.FileKind(fi.Mode()))
	}
	if fi.Size() > limit {
		return nil, tooLarge(limit)
	}
	// One buffer of the size fstat gave, and one byte over to see the end (or growth).
	buf := make([]byte, 0, fi.Size()+1)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) { // it grew since fstat: up to one byte over the limit
			buf = slices.Grow(buf, int(min(int64(cap(buf)), limit+1-int64(len(buf)))))
		}
		n, err := f.Read(buf[len(buf):min(cap(buf), len(buf)+readChunk)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, tooLarge(limit)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func tooLarge(limit int64) error {
	return fmt.Errorf("%w (%d MiB)", ErrTooLarge, limit>>20)
}
