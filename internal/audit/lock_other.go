//go:build !unix

package audit

import "context"

// lockFile is a no-op where flock does not exist: the in-process mutex of checkpoints
// still serialises a process's own writes, and each write is atomic on its own.
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }
