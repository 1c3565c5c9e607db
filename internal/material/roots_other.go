//go:build !linux

package material

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// readDirect is Linux's openat2 shortcut (roots_linux.go); elsewhere every read takes the
// general path.
func readDirect(string) (resolved string, data []byte, ok bool) { return "", nil, false }

// open resolves p's symlinks, checks the result against the roots and opens it. Without
// Linux's walk beneath the root this is a check then a use: a user able to swap
// directories inside a root during the read can race it, which the identity check of the
// opened file against the resolved name narrows but does not close.
func (r Roots) open(tenant, p string) (f *os.File, resolved string, err error) {
	resolved, err = filepath.EvalSymlinks(p)
	if err != nil {
		return nil, "", err
	}
	if len(r) > 0 && !r.admit(tenant, resolved) {
		return nil, "", errLeadsOut
	}
	// O_NONBLOCK keeps open from hanging on a FIFO with no writer; it changes nothing for
	// a regular file. The type is checked on the open descriptor, not on a prior Stat.
	f, err = os.OpenFile(resolved, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, resolved, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, resolved, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, resolved, fmt.Errorf("%w (%s)", ErrNotRegular, FileKind(fi.Mode()))
	}
	if li, err := os.Lstat(resolved); err != nil || !os.SameFile(fi, li) {
		f.Close()
		return nil, resolved, ErrPathChanged
	}
	return f, resolved, nil
}
