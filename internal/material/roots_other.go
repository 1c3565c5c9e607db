//go:build !linux

package material

// readDirect is Linux's openat2 shortcut (roots_linux.go); elsewhere every read takes the
// general path.
func readDirect(string) (resolved string, data []byte, ok bool) { return "", nil, false }
