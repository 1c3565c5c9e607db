//go:build !unix

package fileexport

import "context"

// lockFile is a no-op where flock does not exist: the in-process mutex still serialises a
// process's own writes, and each write is atomic on its own.
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }
