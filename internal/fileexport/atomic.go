package fileexport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// fileMode is the only mode a credentials file is written with.
const fileMode os.FileMode = 0o600

// dirMode is the mode of the directories made for tenant files.
const dirMode os.FileMode = 0o700

// Steps of an atomic write, named for the crash tests' hook.
const (
	stepTempWritten = "temp-written" // data written, not yet synced
	stepTempCreated = "temp-created" // empty temp file exists
	stepTempPartial = "temp-partial" // half the data is in the temp file
	stepTempSynced  = "temp-synced"  // temp file synced and closed
	stepRenamed     = "renamed"      // renamed over the target, directory not yet synced
)

// stepHook, when set (by tests only), runs between the steps of every atomic write, so a
// crash test can stop a real writer at each of them.
var stepHook func(step string)

func step(name string) {
	if stepHook != nil {
		stepHook(name)
	}
}

// WriteAtomic replaces path with data so that a crash at any instant leaves either the old
// file or the new one: data goes to a temp file in the same directory (created exclusively,
// mode 0600), is synced, renamed over path, and the directory is synced so the rename
// survives a power cut. The directory is created (0700) when missing.
func WriteAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("write %s: create directory: %w", path, err)
	}
	// CreateTemp opens with O_EXCL under a random name: concurrent writers, in this process
	// or another, each get their own temp file and never write into each other's.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: create temp file: %w", path, err)
	}
	tmpName := tmp.Name()
	renamed := false
	defer func() {
		if !renamed {
			_ = os.Remove(tmpName)
		}
	}()
	step(stepTempCreated)
	half := len(data) / 2
	_, werr := tmp.Write(data[:half])
	if werr == nil {
		step(stepTempPartial)
		_, werr = tmp.Write(data[half:])
	}
	if werr == nil {
		step(stepTempWritten)
		// CreateTemp makes 0600 already; Chmod states it rather than relying on that.
		if runtime.GOOS != "windows" {
			werr = tmp.Chmod(fileMode)
		}
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if err := errors.Join(werr, tmp.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	step(stepTempSynced)
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("write %s: rename into place: %w", path, err)
	}
	renamed = true
	step(stepRenamed)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes a rename durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there; NTFS journals the entry
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	if err := errors.Join(d.Sync(), d.Close()); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// removeStaleTemps deletes temp files a killed writer left in dir. They are never read, so
// this is housekeeping only. Callers hold the directory's write lock, so no live writer's
// temp file is among them.
func removeStaleTemps(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, "."+FileName+".tmp-*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}
