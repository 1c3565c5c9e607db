// Package logging builds the service's slog logger. Besides format and level it owns the
// last line of defence for log hygiene: whatever reaches a handler, a value that carries PEM
// armour is masked before it is written.
package logging

import (
	"io"
	"log/slog"

	"github.com/loopze/certstore/internal/secret"
)

// Masked replaces any attribute value that contains PEM armour.
const Masked = "[redacted: PEM material]"

// New returns a logger writing to w in format ("text" or "json") at level.
func New(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: ReplaceAttr}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h)
}

// ReplaceAttr is the safety net: secret types already print "[redacted]", and this masks
// anything else that looks like PEM (an error wrapping file contents, a stray string).
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if secret.LooksLikePEM(v.String()) {
			return slog.String(a.Key, Masked)
		}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			if secret.LooksLikePEM(x.Error()) {
				return slog.String(a.Key, Masked)
			}
		case []byte:
			if secret.LooksLikePEM(string(x)) {
				return slog.String(a.Key, Masked)
			}
		case interface{ String() string }:
			if secret.LooksLikePEM(x.String()) {
				return slog.String(a.Key, Masked)
			}
		}
	}
	return a
}

// Discard is a logger that drops everything, for tests and tools that need one.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
