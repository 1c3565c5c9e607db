//go:build !cgo

package masterkey

import "log/slog"

// openPKCS11 refuses: the PKCS#11 binding needs cgo to load a module.
func openPKCS11(*PKCS11URI, func(string) string, *slog.Logger) (Keyring, error) {
	return nil, ErrNoPKCS11
}
