//go:build !unix

package durable

import "context"

// Lock is a no-op where flock does not exist: callers keep an in-process mutex that still
// serialises a process's own writes, and each write is atomic on its own.
func Lock(context.Context, string) (func(), error) { return func() {}, nil }
