package refs

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// This file encodes the model back to JSON: known fields merged with the properties kept
// verbatim, and write-only values always as the marker {"set": true}.

var setMarker = []byte(`{"set":true}`)

// MarshalJSON implements json.Marshaler: always the marker.
func (v Value) MarshalJSON() ([]byte, error) { return setMarker, nil }

// MarshalJSON implements json.Marshaler: the known fields merged with the extras.
func (f *Flow) MarshalJSON() ([]byte, error) {
	m := maps.Clone(f.Extra)
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	put(m, "id", f.ID)
	if f.Label != "" {
		put(m, "label", f.Label)
	}
	// The nodes are written straight into one array: encoding/json would re-validate and
	// compact each node's bytes once per level they pass through.
	nodes := []byte{'['}
	for i, n := range f.Nodes {
		if i > 0 {
			nodes = append(nodes, ',')
		}
		b, err := n.MarshalJSON()
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, b...)
	}
	m["nodes"] = append(nodes, ']')
	return appendObject(nil, m), nil
}

// MarshalJSON implements json.Marshaler: the known fields merged with the extras; values
// of credentials and inline PEM show as {"set": true}.
func (n *Node) MarshalJSON() ([]byte, error) {
	m := maps.Clone(n.Extra)
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	put(m, "id", n.ID)
	put(m, "type", n.Type)
	if n.Name != "" {
		put(m, "name", n.Name)
	}
	if n.TLS != nil {
		put(m, "tls", n.TLS)
	}
	if len(n.Credentials) > 0 {
		put(m, "credentials", n.Credentials)
	}
	return appendObject(nil, m), nil
}

// MarshalJSON implements json.Marshaler.
func (t *TLS) MarshalJSON() ([]byte, error) {
	m := maps.Clone(t.Extra)
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	if t.ServerName != "" {
		put(m, "serverName", t.ServerName)
	}
	for _, p := range Parts {
		s := t.Spec(p)
		for _, f := range []struct{ field, v string }{{p.Ref, s.Ref}, {p.CertFile, s.CertFile}, {p.KeyFile, s.KeyFile}} {
			if f.field != "" && f.v != "" {
				put(m, f.field, f.v)
			}
		}
		if s.CertPEM != nil {
			m[p.CertPEM] = setMarker
		}
		if s.KeyPEM != nil && p.KeyPEM != "" {
			m[p.KeyPEM] = setMarker
		}
	}
	return appendObject(nil, m), nil
}

// appendObject appends m as a JSON object with sorted keys, as encoding/json writes a map,
// but takes the values as the JSON they already are instead of validating and compacting
// them again: they come from json.Marshal or from a document json.Unmarshal accepted.
func appendObject(dst []byte, m map[string]json.RawMessage) []byte {
	dst = append(dst, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			dst = append(dst, ',')
		}
		key, _ := json.Marshal(k) // a string always marshals
		dst = append(dst, key...)
		dst = append(dst, ':')
		dst = append(dst, m[k]...)
	}
	return append(dst, '}')
}

// put marshals v into m[key]; the values put here always marshal.
func put(m map[string]json.RawMessage, key string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here, and none of them fails to marshal.
		panic(fmt.Sprintf("marshal %s: %v", key, err))
	}
	m[key] = b
}
