package fileexport

import (
	"os"

	"github.com/loopze/certstore/internal/durable"
)

// fileMode is the only mode a credentials file is written with.
const fileMode os.FileMode = 0o600

// dirMode is the mode of the directories made for tenant files.
const dirMode os.FileMode = 0o700

// Steps of an atomic write, named for the crash tests' hook.
const (
	stepTempCreated = string(durable.TempCreated)
	stepTempPartial = string(durable.TempPartial)
	stepTempWritten = string(durable.TempWritten)
	stepTempSynced  = string(durable.TempSynced)
	stepRenamed     = string(durable.Installed)
)

// stepHook, when set (by tests only), runs between the steps of every atomic write, so a
// crash test can stop a real writer at each of them.
var stepHook func(step string)

// WriteAtomic replaces path with data so that a crash at any instant leaves either the old
// file or the new one (internal/durable), mode 0600. The directory is created (0700) when
// missing.
func WriteAtomic(path string, data []byte) error {
	opts := []durable.Option{durable.Mode(fileMode), durable.DirMode(dirMode)}
	if hook := stepHook; hook != nil {
		opts = append(opts, durable.Hook(func(s durable.Step) { hook(string(s)) }))
	}
	return durable.Replace(path, data, opts...)
}

// removeStaleTemps deletes temp files a killed writer left beside path. They are never
// read, so this is housekeeping only. Callers hold the directory's write lock, so no live
// writer's temp file is among them.
func removeStaleTemps(path string) { durable.RemoveTemps(path) }
