//go:build linux

package material

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// noOpenat2 is set once the kernel (or a seccomp filter) refuses openat2.
var noOpenat2 atomic.Bool

// readDirect reads the cleaned path when no component of it is a symbolic link, with one
// openat2 (RESOLVE_NO_SYMLINKS) in place of the walk open does: the kernel then guarantees
// that the file opened is the one the cleaned path names, which the roots admitted before
// anything was looked at, and a path without ".." leaves no directory a rename could move
// from under it. ok is false for anything else (a symlink on the way, a missing file, not
// a regular file, too large, a kernel without openat2); the caller then takes the general
// path, which follows the links and says what is wrong.
func readDirect(path string) (resolved string, data []byte, ok bool) {
	if noOpenat2.Load() {
		return "", nil, false
	}
	path = filepath.Clean(path)
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
	return path, buf, true
}

func fstat(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// maxHops bounds the symlinks one read follows, as the kernel's own limit does.
const maxHops = 40

// anchor is a root a walk may start from.
type anchor struct {
	// real is the root with its own symlinks resolved: the directory opened, and where the
	// place of each directory below it is reckoned from.
	real string
	// names are the prefixes a path lies under to be in this root: the root as configured
	// and real.
	names [2]string
}

// anchors are tenant's roots, {tenant} expanded; without roots (the default tenant, as
// Admits allows) the whole file system, from "/".
func (r Roots) anchors(tenant string) []anchor {
	if len(r) == 0 {
		return []anchor{{real: "/", names: [2]string{"/", "/"}}}
	}
	out := make([]anchor, 0, len(r))
	for _, root := range r.of(tenant) {
		real, err := filepath.EvalSymlinks(root)
		if err != nil {
			real = root // opening it fails the same way, as a missing file
		}
		out = append(out, anchor{real: real, names: [2]string{root, real}})
	}
	return out
}

// find returns the anchor holding p (clean and absolute) and the rest of p below it; the
// longest prefix wins.
func find(anchors []anchor, p string) (a anchor, rest string, ok bool) {
	best := -1
	for _, an := range anchors {
		for _, n := range an.names {
			if len(n) > best && within(n, p) {
				best, a, rest, ok = len(n), an, strings.TrimPrefix(p[len(n):], "/"), true
			}
		}
	}
	return a, rest, ok
}

// walk resolves one path beneath the roots, component by component: each is opened with
// O_PATH|O_NOFOLLOW relative to the directory before it, so the kernel follows no symlink
// and a directory swapped for a link after it was checked cannot be passed through. Links
// are read and resolved here: a relative one continues from the directory that holds it,
// ".." going back up the directories actually entered; an absolute one, or ".." above a
// root, continues from the root that holds the place named, computed from the names alone
// (nothing outside the roots is looked at), or ends the walk with errLeadsOut.
type walk struct {
	anchors []anchor
	// dirs are open descriptors: the root's, then each directory entered below it, whose
	// names are names.
	dirs  []int
	names []string
	root  string
	hops  int
}

// open returns p (clean and absolute) opened for reading, and where it resolved to.
// Errors are errLeadsOut, *fs.PathError (with the place that failed), ErrNotRegular and
// ErrPathChanged; resolved is set when a place inside the roots is known.
func (r Roots) open(tenant, p string) (f *os.File, resolved string, err error) {
	w := &walk{anchors: r.anchors(tenant)}
	defer w.release()
	return w.open(p)
}

func (w *walk) release() {
	for _, fd := range w.dirs {
		_ = unix.Close(fd)
	}
	w.dirs, w.names = w.dirs[:0], w.names[:0]
}

// at is the place of the current directory, joined with more.
func (w *walk) at(more ...string) string {
	return filepath.Join(append(append([]string{w.root}, w.names...), more...)...)
}

// enter starts again from the place prefix (clean and absolute) followed by the
// components todo. While prefix lies in no root, components are taken by name alone;
// once it lies in one, the walk goes on from that root's descriptor.
func (w *walk) enter(prefix string, todo []string) ([]string, error) {
	w.release()
	for {
		if a, rest, ok := find(w.anchors, prefix); ok {
			fd, err := openPath(unix.AT_FDCWD, a.real, unix.O_DIRECTORY) // a root is configuration: its own links are followed
			if err != nil {
				return nil, &fs.PathError{Op: "open", Path: a.real, Err: err}
			}
			w.dirs, w.root = append(w.dirs, fd), a.real
			return append(strings.Split(rest, "/"), todo...), nil
		}
		if len(todo) == 0 {
			return nil, errLeadsOut
		}
		switch c := todo[0]; c {
		case "", ".":
		case "..":
			prefix = filepath.Dir(prefix)
		default:
			prefix = filepath.Join(prefix, c)
		}
		todo = todo[1:]
	}
}

func (w *walk) open(p string) (*os.File, string, error) {
	todo, err := w.enter(p, nil)
	if err != nil {
		return nil, "", err
	}
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if n := len(w.names); n > 0 {
				_ = unix.Close(w.dirs[n])
				w.dirs, w.names = w.dirs[:n], w.names[:n-1]
				continue
			}
			if todo, err = w.enter(filepath.Dir(w.root), todo); err != nil {
				return nil, "", err
			}
			continue
		}
		dir := w.dirs[len(w.dirs)-1]
		fd, err := openPath(dir, name, unix.O_NOFOLLOW)
		if err != nil {
			return nil, w.at(name), &fs.PathError{Op: "open", Path: w.at(name), Err: err}
		}
		var st unix.Stat_t
		if err := fstat(fd, &st); err != nil {
			_ = unix.Close(fd)
			return nil, w.at(name), &fs.PathError{Op: "stat", Path: w.at(name), Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			w.dirs, w.names = append(w.dirs, fd), append(w.names, name)
		case unix.S_IFLNK:
			target, err := readlink(fd)
			_ = unix.Close(fd)
			if err != nil {
				return nil, w.at(name), &fs.PathError{Op: "readlink", Path: w.at(name), Err: err}
			}
			if w.hops++; w.hops > maxHops {
				return nil, w.at(name), &fs.PathError{Op: "open", Path: w.at(name), Err: unix.ELOOP}
			}
			if filepath.IsAbs(target) {
				if todo, err = w.enter("/", append(strings.Split(target, "/"), todo...)); err != nil {
					return nil, "", err
				}
				continue
			}
			todo = append(strings.Split(target, "/"), todo...)
		default:
			_ = unix.Close(fd)
			f, resolved, err := w.openFile(dir, name, &st, len(todo) > 0)
			return f, resolved, err
		}
	}
	return nil, w.at(), fmt.Errorf("%w (a directory)", ErrNotRegular)
}

// openFile opens for reading the file name in dir that st describes; more says components
// follow it in the path.
func (w *walk) openFile(dir int, name string, st *unix.Stat_t, more bool) (*os.File, string, error) {
	resolved := w.at(name)
	if more {
		return nil, resolved, &fs.PathError{Op: "open", Path: resolved, Err: unix.ENOTDIR}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, resolved, fmt.Errorf("%w (%s)", ErrNotRegular, FileKind(modeOf(st.Mode)))
	}
	// O_PATH descriptors cannot be read: the name is opened again, and must still be the
	// file just checked. O_NONBLOCK keeps a FIFO put there meanwhile from blocking.
	var fd int
	var err error
	for {
		fd, err = unix.Openat(dir, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, resolved, ErrPathChanged // it became a symlink
	}
	if err != nil {
		return nil, resolved, &fs.PathError{Op: "open", Path: resolved, Err: err}
	}
	var now unix.Stat_t
	if err := fstat(fd, &now); err != nil || now.Dev != st.Dev || now.Ino != st.Ino {
		_ = unix.Close(fd)
		return nil, resolved, ErrPathChanged
	}
	return os.NewFile(uintptr(fd), resolved), resolved, nil
}

// openPath opens name relative to dir with O_PATH, which needs no permission on the file
// itself and reads nothing.
func openPath(dir int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_CLOEXEC|flags, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// readlink reads the symlink fd (opened O_PATH|O_NOFOLLOW) itself, not whatever its name
// holds by now.
func readlink(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size >= unix.PathMax {
			return "", unix.ENAMETOOLONG
		}
	}
}

// modeOf is the type bits of a stat mode as fs.FileMode.
func modeOf(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return fs.ModeIrregular
}
