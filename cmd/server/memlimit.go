package main

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// defaultMemoryLimit is the Go runtime's soft memory limit for serve unless GOMEMLIMIT
// sets one. Without it the GC lets the heap grow to twice what is live (GOGC=100) and the
// pages stay resident for minutes after an export or a burst of requests: with both caches
// full (32 MiB each), 1,000 tenants of 1,000 entries peaked at 265-292 MiB resident. The
// limit makes the GC collect sooner and return memory to the kernel once the heap nears
// it; it is soft, so a live heap above it (a very large tenant's export) still succeeds,
// with more GC work. Operators who give the process more memory set GOMEMLIMIT (for
// example GOMEMLIMIT=512MiB, or GOMEMLIMIT=off for none): docs/operations.md.
const defaultMemoryLimit = 128 << 20

// applyMemoryLimit sets defaultMemoryLimit when the process's environment, which the Go
// runtime read at start, sets no GOMEMLIMIT.
func applyMemoryLimit(logger *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		logger.Debug("soft memory limit from GOMEMLIMIT", "limit_bytes", debug.SetMemoryLimit(-1))
		return
	}
	debug.SetMemoryLimit(defaultMemoryLimit)
	logger.Debug("soft memory limit", "limit_bytes", int64(defaultMemoryLimit))
}
