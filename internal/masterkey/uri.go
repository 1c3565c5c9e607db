package masterkey

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/loopze/certstore/internal/secret"
)

// ErrBadURI means LOOPZE_MASTER_KEY_URI is not a URI this package opens. Its messages name
// the defect and the attribute, never an attribute's value: a malformed URI cannot be
// trusted to say where its PIN is.
var ErrBadURI = errors.New("bad master key URI")

// Scheme prefixes of the URIs Open accepts.
const (
	SchemeFile   = "file:"
	SchemePKCS11 = "pkcs11:"
)

// PKCS11URI is a parsed RFC 7512 URI naming the master key's token and object. Empty
// fields match anything.
type PKCS11URI struct {
	// Token, Manufacturer, Serial and Model select the token by its CK_TOKEN_INFO.
	Token, Manufacturer, Serial, Model string
	// SlotID selects the slot by number when HasSlotID is set.
	SlotID    uint
	HasSlotID bool
	// SlotDescription and SlotManufacturer select the slot by its CK_SLOT_INFO.
	SlotDescription, SlotManufacturer string
	// LibraryManufacturer and LibraryDescription must match the module's CK_INFO.
	LibraryManufacturer, LibraryDescription string
	// Object is the label (CKA_LABEL) shared by every version of the master key.
	Object string
	// ID (CKA_ID) pins one version: the keyring then holds that key alone.
	ID []byte
	// ModulePath is the PKCS#11 library to load.
	ModulePath string
	// PINSource is the file whose first line is the user PIN.
	PINSource string
	// PINValue is the PIN given in the URI itself.
	PINValue secret.String

	// attrs keeps the attributes in the order given, for String.
	attrs []attr
}

type attr struct {
	query      bool
	name, text string // text is the value as written (still percent-encoded)
}

// pathAttrs and queryAttrs are the RFC 7512 attributes this package understands. A
// standard attribute left out (library-version, module-name) is refused rather than
// ignored: ignoring it would widen what the URI selects.
var (
	pathAttrs = []string{"token", "manufacturer", "serial", "model", "slot-id", "slot-description",
		"slot-manufacturer", "library-manufacturer", "library-description", "object", "id", "type"}
	queryAttrs = []string{"module-path", "pin-source", "pin-value"}
)

// ParsePKCS11URI parses a pkcs11: URI (RFC 7512). It requires object, module-path and one
// of pin-source or pin-value; type, when given, must be secret-key.
func ParsePKCS11URI(raw string) (*PKCS11URI, error) {
	if len(raw) < len(SchemePKCS11) || !strings.EqualFold(raw[:len(SchemePKCS11)], SchemePKCS11) {
		return nil, fmt.Errorf("%w: want a URI starting %q", ErrBadURI, SchemePKCS11)
	}
	rest := raw[len(SchemePKCS11):]
	path, query, _ := strings.Cut(rest, "?")
	if strings.Contains(rest, "#") {
		return nil, fmt.Errorf("%w: a PKCS#11 URI has no fragment", ErrBadURI)
	}
	u := &PKCS11URI{}
	seen := map[string]bool{}
	for _, part := range []struct {
		text  string
		sep   string
		query bool
		names []string
	}{{path, ";", false, pathAttrs}, {query, "&", true, queryAttrs}} {
		for seg := range strings.SplitSeq(part.text, part.sep) {
			if seg == "" {
				continue
			}
			name, text, ok := strings.Cut(seg, "=")
			if !ok {
				return nil, fmt.Errorf("%w: attribute %q has no value", ErrBadURI, printable(name))
			}
			if !slices.Contains(part.names, name) {
				where := "path"
				if part.query {
					where = "query"
				}
				return nil, fmt.Errorf("%w: %s attribute %q is not supported", ErrBadURI, where, printable(name))
			}
			if seen[name] {
				return nil, fmt.Errorf("%w: attribute %q given twice", ErrBadURI, name)
			}
			seen[name] = true
			value, err := url.PathUnescape(text)
			if err != nil {
				return nil, fmt.Errorf("%w: attribute %q: bad percent-encoding", ErrBadURI, name)
			}
			if err := u.set(name, value); err != nil {
				return nil, err
			}
			if name == "pin-value" {
				text = secret.Redacted // kept for String, which must never show it
			}
			u.attrs = append(u.attrs, attr{query: part.query, name: name, text: text})
		}
	}
	switch {
	case u.Object == "":
		return nil, fmt.Errorf("%w: object (the master key's label) is required", ErrBadURI)
	case u.ModulePath == "":
		return nil, fmt.Errorf("%w: module-path (the PKCS#11 library) is required", ErrBadURI)
	case u.PINSource == "" && u.PINValue == "":
		return nil, fmt.Errorf("%w: pin-source or pin-value is required", ErrBadURI)
	case u.PINSource != "" && u.PINValue != "":
		return nil, fmt.Errorf("%w: pin-source and pin-value exclude each other", ErrBadURI)
	}
	return u, nil
}

func (u *PKCS11URI) set(name, value string) error {
	switch name {
	case "token":
		u.Token = value
	case "manufacturer":
		u.Manufacturer = value
	case "serial":
		u.Serial = value
	case "model":
		u.Model = value
	case "slot-description":
		u.SlotDescription = value
	case "slot-manufacturer":
		u.SlotManufacturer = value
	case "library-manufacturer":
		u.LibraryManufacturer = value
	case "library-description":
		u.LibraryDescription = value
	case "object":
		u.Object = value
	case "slot-id":
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return fmt.Errorf("%w: slot-id is not a decimal number", ErrBadURI)
		}
		u.SlotID, u.HasSlotID = uint(n), true
	case "id":
		if value == "" {
			return fmt.Errorf("%w: id is empty", ErrBadURI)
		}
		u.ID = []byte(value)
	case "type":
		if value != "secret-key" {
			return fmt.Errorf("%w: type must be secret-key: the master key is an AES key", ErrBadURI)
		}
	case "module-path":
		if !filepath.IsAbs(value) {
			return fmt.Errorf("%w: module-path must be an absolute path", ErrBadURI)
		}
		u.ModulePath = value
	case "pin-source":
		p, err := pinSourcePath(value)
		if err != nil {
			return err
		}
		u.PINSource = p
	case "pin-value":
		if value == "" {
			return fmt.Errorf("%w: pin-value is empty", ErrBadURI)
		}
		u.PINValue = secret.String(value)
	}
	return nil
}

// pinSourcePath reads pin-source: a file: URI (file:/p or file:///p) or an absolute path.
func pinSourcePath(v string) (string, error) {
	p := v
	if rest, ok := strings.CutPrefix(v, "file:"); ok {
		p = rest
		if after, ok := strings.CutPrefix(rest, "//"); ok {
			// file://host/p names another machine; only the local host (empty) is a file here.
			if !strings.HasPrefix(after, "/") {
				return "", fmt.Errorf("%w: pin-source must be a local file", ErrBadURI)
			}
			p = after
		}
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: pin-source must be file: and an absolute path", ErrBadURI)
	}
	return filepath.Clean(p), nil
}

// String returns the URI as given, with pin-value replaced by [redacted], so it can name
// the key in logs and errors.
func (u *PKCS11URI) String() string {
	var path, query []string
	for _, a := range u.attrs {
		if a.query {
			query = append(query, a.name+"="+a.text)
		} else {
			path = append(path, a.name+"="+a.text)
		}
	}
	s := SchemePKCS11 + strings.Join(path, ";")
	if len(query) > 0 {
		s += "?" + strings.Join(query, "&")
	}
	return s
}

// GoString implements fmt.GoStringer with String.
func (u *PKCS11URI) GoString() string { return u.String() }

// Format implements fmt.Formatter, so no verb (%+v, %#v) prints the fields.
func (u *PKCS11URI) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(u.String())) }

// LogValue implements slog.LogValuer with String.
func (u *PKCS11URI) LogValue() slog.Value { return slog.StringValue(u.String()) }

// printable returns an attribute name from a URI fit to quote in an error: a name is not a
// secret, but a segment that failed to parse may be a PIN with its '=' lost, so only what
// looks like an attribute name, and not like a PIN's, is quoted.
func printable(name string) string {
	ok := name != "" && len(name) <= 32 && !strings.HasPrefix(name, "pin") &&
		!strings.HasPrefix(name, "-") && !strings.HasSuffix(name, "-")
	for _, c := range name {
		ok = ok && (c >= 'a' && c <= 'z' || c == '-')
	}
	if !ok {
		return "(not shown)"
	}
	return name
}

// Redact returns uri fit for a log line or an error: a pkcs11: URI without its PIN, a
// file: URI as it is, and anything else as its scheme alone.
func Redact(uri string) string {
	switch {
	case uri == "" || strings.HasPrefix(uri, SchemeFile):
		return uri
	case len(uri) >= len(SchemePKCS11) && strings.EqualFold(uri[:len(SchemePKCS11)], SchemePKCS11):
		u, err := ParsePKCS11URI(uri)
		if err != nil {
			return SchemePKCS11 + "(malformed)"
		}
		return u.String()
	}
	scheme, _, ok := strings.Cut(uri, ":")
	if !ok || len(scheme) > 16 {
		return "(not a URI)"
	}
	return scheme + ":(redacted)"
}
