// Package durable writes files so that a crash at any instant leaves either the old
// content or the new, never a torn file, and so that a write reported done survives a
// power cut: data goes to a temp file in the same directory (created exclusively, mode
// 0600 unless told otherwise), is synced, then renamed over the target (Replace) or hard
// linked to it (CreateExclusive, which refuses to overwrite), and the directory is synced.
// The master key, the JWT secret, credentials.json and key rotation's promotion all write
// through it.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Step names a point between the durable steps of a write, for crash tests.
type Step string

// The steps of a write, in order.
const (
	TempCreated Step = "temp-created" // an empty temp file exists
	TempPartial Step = "temp-partial" // half the data is in the temp file
	TempWritten Step = "temp-written" // all data written, not yet synced
	TempSynced  Step = "temp-synced"  // temp file synced and closed
	Installed   Step = "renamed"      // renamed (or linked) into place, directory not yet synced
)

// Option adjusts a write.
type Option func(*options)

type options struct {
	mode    fs.FileMode
	dirMode fs.FileMode
	hook    func(Step)
}

// Mode sets the file's mode (default 0600).
func Mode(m fs.FileMode) Option { return func(o *options) { o.mode = m } }

// DirMode creates the file's directory with mode m when it is missing (by default the
// directory must exist).
func DirMode(m fs.FileMode) Option { return func(o *options) { o.dirMode = m } }

// Hook calls f between the steps of the write, so a crash test can stop a real writer at
// each of them.
func Hook(f func(Step)) Option { return func(o *options) { o.hook = f } }

func collect(opts []Option) options {
	o := options{mode: 0o600}
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (o options) step(s Step) {
	if o.hook != nil {
		o.hook(s)
	}
}

// Replace replaces path with data atomically and durably.
func Replace(path string, data []byte, opts ...Option) error {
	o := collect(opts)
	tmp, err := writeTemp(path, data, o)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: rename into place: %w", path, err)
	}
	o.step(Installed)
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// CreateExclusive creates path with data atomically and durably, and refuses to replace an
// existing file: of several processes creating it at once exactly one wins, the others get
// an error wrapping fs.ErrExist, and no reader ever sees a partial file.
func CreateExclusive(path string, data []byte, opts ...Option) error {
	o := collect(opts)
	tmp, err := writeTemp(path, data, o)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // after the link the content lives on under path
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: refusing to overwrite: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	o.step(Installed)
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// Rename renames oldPath over newPath and syncs the directory, so the rename survives a
// power cut. Both must be in the same directory.
func Rename(oldPath, newPath string) error {
	if err := os.Rename(oldPath, newPath); err != nil {
		return fmt.Errorf("rename %s: %w", oldPath, err)
	}
	if err := SyncDir(filepath.Dir(newPath)); err != nil {
		return fmt.Errorf("rename %s: %w", oldPath, err)
	}
	return nil
}

// writeTemp writes data to a new temp file beside path, with the mode asked for, synced
// and closed, and returns its name. The temp file is removed on failure.
func writeTemp(path string, data []byte, o options) (name string, err error) {
	dir := filepath.Dir(path)
	if o.dirMode != 0 {
		if err := os.MkdirAll(dir, o.dirMode); err != nil {
			return "", fmt.Errorf("write %s: create directory: %w", path, err)
		}
	}
	// CreateTemp opens with O_EXCL under a random name and mode 0600: concurrent writers
	// each get their own temp file, and the content is never readable by others, not even
	// for the instant before the chmod below.
	tmp, err := os.CreateTemp(dir, TempPrefix(path)+"*")
	if err != nil {
		return "", fmt.Errorf("write %s: create temp file: %w", path, err)
	}
	name = tmp.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(name)
		}
	}()
	o.step(TempCreated)
	half := len(data) / 2
	_, werr := tmp.Write(data[:half])
	if werr == nil {
		o.step(TempPartial)
		_, werr = tmp.Write(data[half:])
	}
	if werr == nil {
		o.step(TempWritten)
		if runtime.GOOS != "windows" {
			// States the mode instead of relying on CreateTemp's and the umask.
			werr = tmp.Chmod(o.mode)
		}
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if err := errors.Join(werr, tmp.Close()); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	o.step(TempSynced)
	return name, nil
}

// TempPrefix is how the temp files of writes to path begin: a killed writer's leftovers
// can be found (and removed by whoever holds the directory's write lock) with it.
func TempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// RemoveTemps deletes the temp files killed writers of path left behind. They are never
// read; the caller must know no live writer is using them (it holds a lock).
func RemoveTemps(path string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), TempPrefix(path)+"*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

// SyncDir makes the directory's entries (a rename, a new link) durable.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there; NTFS journals the entry
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	if err := errors.Join(d.Sync(), d.Close()); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
