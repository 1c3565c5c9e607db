//go:build linux

package material

import (
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// noOpenat2 is set once the kernel (or a seccomp filter) refuses openat2.
var noOpenat2 atomic.Bool

// readDirect reads path when no component of it is a symbolic link, with one openat2
// (RESOLVE_NO_SYMLINKS) in place of an lstat per component, an open and an lstat of the
// result: the kernel then guarantees that the file opened is the one the cleaned path
// names, which the roots admitted before anything was looked at. ok is false for anything
// else (a symlink on the way, a missing file, not a regular file, too large, a kernel
// without openat2); the caller then takes the general path, which follows the links and
// says what is wrong exactly as it always does.
func readDirect(path string) (resolved string, data []byte, ok bool) {
	if noOpenat2.Load() {
		return "", nil, false
	}
	var fd int
	var err error
	for {
		fd, err = unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_NO_SYMLINKS,
		})
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			noOpenat2.Store(true)
		}
		return "", nil, false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", nil, false
	}
	buf := make([]byte, 0, min(max(st.Size, 0), MaxSize)+1)
	for {
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n < 0 {
			return "", nil, false
		}
		if n == 0 {
			break
		}
		short := n < cap(buf)-len(buf)
		buf = buf[:len(buf)+n]
		if len(buf) > MaxSize {
			return "", nil, false
		}
		if short && int64(len(buf)) == st.Size {
			// All the bytes fstat counted, and a short read: the end of the file, without
			// a further read to be told so.
			break
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), MaxSize+1-len(buf)))
		}
	}
	return filepath.Clean(path), buf, true
}

func fstat(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
