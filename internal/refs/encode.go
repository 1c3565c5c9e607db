package refs

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"
)

// This file encodes the model back to JSON: known fields merged with the properties kept
// verbatim, and write-only values always as the marker {"set": true}. Objects are written
// with sorted keys, as encoding/json writes a map, straight into one buffer: going through
// encoding/json would re-validate and compact every node's bytes once per level they pass
// through, which for a large workspace costs more than the rest of a deploy's encoding.

var setMarker = []byte(`{"set":true}`)

// MarshalJSON implements json.Marshaler: always the marker.
func (v Value) MarshalJSON() ([]byte, error) { return setMarker, nil }

// MarshalJSON implements json.Marshaler: the known fields merged with the extras.
func (f *Flow) MarshalJSON() ([]byte, error) { return f.appendJSON(nil, false), nil }

// MarshalJSON implements json.Marshaler: the known fields merged with the extras; values
// of credentials and inline PEM show as {"set": true}.
func (n *Node) MarshalJSON() ([]byte, error) { return n.appendJSON(nil, false), nil }

// MarshalJSON implements json.Marshaler.
func (t *TLS) MarshalJSON() ([]byte, error) { return t.appendJSON(nil, false), nil }

// AppendStripped appends the workspace without write-only values (no credentials, no
// inline PEM: the form stored as the workspace document, see Stripped) to dst. Properties
// kept verbatim are written as they came, so the result is valid JSON but not necessarily
// compact.
func (w *Workspace) AppendStripped(dst []byte) []byte {
	dst = append(dst, `{"flows":[`...)
	for i, f := range w.Flows {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = f.appendJSON(dst, true)
	}
	return append(dst, "]}"...)
}

// member is one property of an object being written: raw JSON, or a value appended by fn.
type member struct {
	key string
	raw []byte
	fn  func([]byte) []byte
}

// object collects the members of one object; known fields replace extras of the same name.
type objectWriter struct{ ms []member }

func newObject(extra map[string]json.RawMessage, known int) *objectWriter {
	o := &objectWriter{ms: make([]member, 0, len(extra)+known)}
	for k, v := range extra {
		o.ms = append(o.ms, member{key: k, raw: v})
	}
	return o
}

func (o *objectWriter) set(m member) {
	for i := range o.ms {
		if o.ms[i].key == m.key {
			o.ms[i] = m
			return
		}
	}
	o.ms = append(o.ms, m)
}

func (o *objectWriter) str(key, v string) {
	o.set(member{key: key, fn: func(dst []byte) []byte { return appendString(dst, v) }})
}

func (o *objectWriter) appendTo(dst []byte) []byte {
	slices.SortFunc(o.ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
	dst = append(dst, '{')
	for i, m := range o.ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, m.key)
		dst = append(dst, ':')
		if m.fn != nil {
			dst = m.fn(dst)
		} else {
			dst = append(dst, m.raw...)
		}
	}
	return append(dst, '}')
}

func (f *Flow) appendJSON(dst []byte, stripped bool) []byte {
	o := newObject(f.Extra, 3)
	o.str("id", f.ID)
	if f.Label != "" {
		o.str("label", f.Label)
	}
	o.set(member{key: "nodes", fn: func(dst []byte) []byte {
		dst = append(dst, '[')
		for i, n := range f.Nodes {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = n.appendJSON(dst, stripped)
		}
		return append(dst, ']')
	}})
	return o.appendTo(dst)
}

func (n *Node) appendJSON(dst []byte, stripped bool) []byte {
	o := newObject(n.Extra, 5)
	o.str("id", n.ID)
	o.str("type", n.Type)
	if n.Name != "" {
		o.str("name", n.Name)
	}
	if n.TLS != nil {
		o.set(member{key: "tls", fn: func(dst []byte) []byte { return n.TLS.appendJSON(dst, stripped) }})
	}
	if len(n.Credentials) > 0 && !stripped {
		o.set(member{key: "credentials", fn: func(dst []byte) []byte {
			keys := make([]string, 0, len(n.Credentials))
			for k := range n.Credentials {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			dst = append(dst, '{')
			for i, k := range keys {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendString(dst, k)
				dst = append(dst, ':')
				dst = append(dst, setMarker...)
			}
			return append(dst, '}')
		}})
	}
	return o.appendTo(dst)
}

func (t *TLS) appendJSON(dst []byte, stripped bool) []byte {
	o := newObject(t.Extra, 4)
	if t.ServerName != "" {
		o.str("serverName", t.ServerName)
	}
	for _, p := range Parts {
		s := t.Spec(p)
		for _, f := range [...]struct{ field, v string }{{p.Ref, s.Ref}, {p.CertFile, s.CertFile}, {p.KeyFile, s.KeyFile}} {
			if f.field != "" && f.v != "" {
				o.str(f.field, f.v)
			}
		}
		if stripped {
			continue
		}
		if s.CertPEM != nil {
			o.set(member{key: p.CertPEM, raw: setMarker})
		}
		if s.KeyPEM != nil && p.KeyPEM != "" {
			o.set(member{key: p.KeyPEM, raw: setMarker})
		}
	}
	return o.appendTo(dst)
}

// appendString appends s as a JSON string exactly as encoding/json writes it (HTML
// characters escaped): plain text directly, anything needing an escape through
// encoding/json itself.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// put marshals a string into m[key].
func put(m map[string]json.RawMessage, key, v string) {
	m[key] = appendString(nil, v)
}
