// Package secret holds the types that carry secret material (PEM, private keys, tokens,
// node credentials) through the program. None of them can be printed: fmt, slog and
// encoding/json all see "[redacted]", so a secret that reaches a log line, an error or a
// response body by mistake leaks nothing.
package secret

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Redacted is what every secret prints as.
const Redacted = "[redacted]"

// Bytes is secret binary material: a key, a token, a data key.
type Bytes []byte

// String implements fmt.Stringer.
func (Bytes) String() string { return Redacted }

// GoString implements fmt.GoStringer, so %#v is covered too.
func (Bytes) GoString() string { return Redacted }

// Format implements fmt.Formatter, so every verb (%x, %d, %q too) prints the placeholder.
func (Bytes) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// LogValue implements slog.LogValuer.
func (Bytes) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON keeps secrets out of JSON bodies.
func (Bytes) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText covers encoders that use encoding.TextMarshaler (YAML, slog's text handler).
func (Bytes) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// PEM is PEM-encoded material: certificates and private keys alike.
type PEM []byte

// String implements fmt.Stringer.
func (PEM) String() string { return Redacted }

// GoString implements fmt.GoStringer.
func (PEM) GoString() string { return Redacted }

// Format implements fmt.Formatter, so every verb (%x, %d, %q too) prints the placeholder.
func (PEM) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// LogValue implements slog.LogValuer.
func (PEM) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON keeps PEM out of JSON bodies.
func (PEM) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText covers encoders that use encoding.TextMarshaler.
func (PEM) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// String is a secret string, such as a node credential value or a JWT.
type String string

// String implements fmt.Stringer.
func (String) String() string { return Redacted }

// GoString implements fmt.GoStringer.
func (String) GoString() string { return Redacted }

// Format implements fmt.Formatter, so every verb (%x, %d, %q too) prints the placeholder.
func (String) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// LogValue implements slog.LogValuer.
func (String) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON keeps the value out of JSON bodies.
func (String) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText covers encoders that use encoding.TextMarshaler.
func (String) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Reveal returns the plain value, for the few places that must use it.
func (s String) Reveal() string { return string(s) }

// LooksLikePEM reports whether s carries PEM armour. The logging safety net and tests use it.
func LooksLikePEM(s string) bool { return strings.Contains(s, "-----BEGIN") }
