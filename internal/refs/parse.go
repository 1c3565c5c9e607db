package refs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/loopze/certstore/internal/secret"
)

// This file decodes workspace documents: the strict Parse of a deploy (after scan, see
// bounds.go) and the lenient ParseStored of what was stored before. Errors name a JSON path
// and never quote values.

// UnmarshalJSON implements json.Unmarshaler. Errors never quote the value.
func (v *Value) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*v = Value{}
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return errors.New("is not a valid JSON string")
		}
		*v = Value{Text: secret.String(s)}
		return nil
	case len(b) > 0 && b[0] == '{':
		var m struct {
			Set *bool `json:"set"`
		}
		if err := json.Unmarshal(b, &m); err != nil || m.Set == nil || !*m.Set {
			return errors.New(`must be a string or {"set": true}`)
		}
		*v = Value{Keep: true}
		return nil
	}
	return errors.New(`must be a string or {"set": true}`)
}

// FieldError is a decoding problem at a JSON path ("flows[0].nodes[2].tls.caBundleRef").
// Messages never quote values, which may be PEM.
type FieldError struct {
	Path    string
	Message string
	// Err is a sentinel the error also is (errors.Is), such as ErrUnstorable; may be nil.
	Err error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Message }

// Unwrap exposes the sentinel.
func (e *FieldError) Unwrap() error { return e.Err }

// ErrUnstorable marks a document that is valid JSON but holds text PostgreSQL cannot store.
var ErrUnstorable = errors.New("document cannot be stored")

// Parse decodes a workspace document sent for a deploy, holding it to every rule of what
// may be stored (see scan and the bounds). A malformed document is a *FieldError (or a
// *json.SyntaxError for broken JSON), never an error quoting the input.
func Parse(data []byte) (*Workspace, error) {
	if len(data) > MaxBytes {
		return nil, &FieldError{Path: "body", Message: fmt.Sprintf("is %d bytes; a workspace may be at most %d", len(data), MaxBytes), Err: ErrRefused}
	}
	if err := scan(data); err != nil {
		return nil, err
	}
	return parse(data, true)
}

// ParseStored decodes a workspace document that was stored before: it was held to the
// rules of its time when deployed, and is read back as it is.
func ParseStored(data []byte) (*Workspace, error) { return parse(data, false) }

func parse(data []byte, strict bool) (*Workspace, error) {
	var raw struct {
		Flows []json.RawMessage `json:"flows"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, &FieldError{Path: "body", Message: fmt.Sprintf("malformed JSON at byte %d", se.Offset)}
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, &FieldError{Path: "body" + dotPath(te.Field), Message: "must be " + jsonKind(te.Type.Kind().String())}
		}
		return nil, &FieldError{Path: "body", Message: "malformed JSON"}
	}
	if dec.More() {
		return nil, &FieldError{Path: "body", Message: "unexpected data after the workspace object"}
	}
	if raw.Flows == nil {
		return nil, &FieldError{Path: "flows", Message: "is required (an empty workspace is {\"flows\": []})"}
	}
	if strict && len(raw.Flows) > MaxFlows {
		return nil, &FieldError{Path: "flows", Message: fmt.Sprintf("has %d flows; a workspace may have at most %d", len(raw.Flows), MaxFlows), Err: ErrRefused}
	}
	ws := &Workspace{Flows: make([]*Flow, 0, len(raw.Flows))}
	nodes := 0
	for i, rf := range raw.Flows {
		f, err := parseFlow(rf, fmt.Sprintf("flows[%d]", i), strict)
		if err != nil {
			return nil, err
		}
		if nodes += len(f.Nodes); strict && nodes > MaxNodes {
			return nil, &FieldError{Path: fmt.Sprintf("flows[%d].nodes", i), Message: fmt.Sprintf("brings the workspace past %d nodes, the most it may have", MaxNodes), Err: ErrRefused}
		}
		ws.Flows = append(ws.Flows, f)
	}
	return ws, nil
}

func dotPath(f string) string {
	if f == "" {
		return ""
	}
	return "." + f
}

func jsonKind(goKind string) string {
	switch goKind {
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	case "string":
		return "a string"
	}
	return "of another type"
}

// object decodes a JSON object into its properties.
func object(b json.RawMessage, path string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, &FieldError{Path: path, Message: "must be an object"}
	}
	return m, nil
}

// take removes key from m and decodes it as a string; absent and null give "".
func takeString(m map[string]json.RawMessage, key, path string) (string, error) {
	b, ok := m[key]
	if !ok {
		return "", nil
	}
	delete(m, key)
	if isNull(b) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", &FieldError{Path: path + "." + key, Message: "must be a string"}
	}
	return s, nil
}

func isNull(b json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(b), []byte("null")) }

func parseFlow(b json.RawMessage, path string, strict bool) (*Flow, error) {
	m, err := object(b, path)
	if err != nil {
		return nil, err
	}
	f := &Flow{}
	if f.ID, err = takeString(m, "id", path); err != nil {
		return nil, err
	}
	if f.Label, err = takeString(m, "label", path); err != nil {
		return nil, err
	}
	if rn, ok := m["nodes"]; ok {
		delete(m, "nodes")
		var nodes []json.RawMessage
		if !isNull(rn) {
			if err := json.Unmarshal(rn, &nodes); err != nil {
				return nil, &FieldError{Path: path + ".nodes", Message: "must be an array"}
			}
		}
		f.Nodes = make([]*Node, 0, len(nodes))
		for j, b := range nodes {
			n, err := parseNode(b, fmt.Sprintf("%s.nodes[%d]", path, j), strict)
			if err != nil {
				return nil, err
			}
			f.Nodes = append(f.Nodes, n)
		}
	}
	f.Extra = nilIfEmpty(m)
	return f, nil
}

func nilIfEmpty(m map[string]json.RawMessage) map[string]json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	return m
}

func parseNode(b json.RawMessage, path string, strict bool) (*Node, error) {
	m, err := object(b, path)
	if err != nil {
		return nil, err
	}
	if strict && len(m) > MaxNodeProperties {
		return nil, &FieldError{Path: path, Message: fmt.Sprintf("has %d properties; a node may have at most %d", len(m), MaxNodeProperties), Err: ErrRefused}
	}
	n := &Node{}
	for _, f := range []struct {
		key string
		dst *string
	}{{"id", &n.ID}, {"type", &n.Type}, {"name", &n.Name}} {
		if *f.dst, err = takeString(m, f.key, path); err != nil {
			return nil, err
		}
	}
	if rt, ok := m["tls"]; ok {
		delete(m, "tls")
		if !isNull(rt) {
			if n.TLS, err = parseTLS(rt, path+".tls", strict); err != nil {
				return nil, err
			}
		}
	}
	if rc, ok := m["credentials"]; ok {
		delete(m, "credentials")
		if !isNull(rc) {
			cm, err := object(rc, path+".credentials")
			if err != nil {
				return nil, err
			}
			n.Credentials = make(map[string]Value, len(cm))
			for k, rv := range cm {
				var v Value
				if err := v.UnmarshalJSON(rv); err != nil {
					return nil, &FieldError{Path: path + ".credentials." + k, Message: err.Error()}
				}
				n.Credentials[k] = v
			}
		}
	}
	n.Extra = nilIfEmpty(m)
	return n, nil
}

func parseTLS(b json.RawMessage, path string, strict bool) (*TLS, error) {
	m, err := object(b, path)
	if err != nil {
		return nil, err
	}
	t := &TLS{}
	if t.ServerName, err = takeString(m, "serverName", path); err != nil {
		return nil, err
	}
	for _, p := range Parts {
		s := t.Spec(p)
		strs := []struct {
			field string
			dst   *string
		}{{p.Ref, &s.Ref}, {p.CertFile, &s.CertFile}, {p.KeyFile, &s.KeyFile}}
		for _, f := range strs {
			if f.field == "" {
				continue
			}
			if *f.dst, err = takeString(m, f.field, path); err != nil {
				return nil, err
			}
		}
		for _, f := range []struct {
			field string
			dst   **Value
		}{{p.CertPEM, &s.CertPEM}, {p.KeyPEM, &s.KeyPEM}} {
			if f.field == "" {
				continue
			}
			rv, ok := m[f.field]
			if !ok {
				continue
			}
			delete(m, f.field)
			var v Value
			if err := v.UnmarshalJSON(rv); err != nil {
				return nil, &FieldError{Path: path + "." + f.field, Message: err.Error()}
			}
			if !v.Cleared() {
				*f.dst = &v
			}
		}
	}
	for k := range m {
		if strict && !tlsOptions[k] {
			return nil, &FieldError{Path: path + "." + k, Message: unknownTLSProperty(k), Err: ErrRefused}
		}
	}
	t.Extra = nilIfEmpty(m)
	return t, nil
}

// tlsOptions are the properties of a tls block besides its parts and serverName; they are
// kept as sent. Anything else is refused, so that a mistyped field (clientKeyPEM for
// clientKeyPem) cannot land in clear beside the sealed ones.
var tlsOptions = map[string]bool{"alpnProtocol": true}

// unknownTLSProperty explains an unknown tls property, naming the known one it is a case
// variant of.
func unknownTLSProperty(k string) string {
	known := []string{"serverName"}
	for _, p := range Parts {
		known = append(known, p.Ref, p.CertFile, p.KeyFile, p.CertPEM, p.KeyPEM)
	}
	for o := range tlsOptions {
		known = append(known, o)
	}
	for _, f := range known {
		if f != "" && strings.EqualFold(f, k) {
			return "is not a tls property; names are case-sensitive: did you mean " + f + "?"
		}
	}
	return "is not a tls property (the parts are caBundle*, clientCert*/clientKey*, serverCert*/serverKey* as Ref, File or Pem; besides them serverName and alpnProtocol)"
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *Flow) UnmarshalJSON(b []byte) error {
	g, err := parseFlow(b, "flow", false)
	if err != nil {
		return err
	}
	*f = *g
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (n *Node) UnmarshalJSON(b []byte) error {
	g, err := parseNode(b, "node", false)
	if err != nil {
		return err
	}
	*n = *g
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *TLS) UnmarshalJSON(b []byte) error {
	g, err := parseTLS(b, "tls", false)
	if err != nil {
		return err
	}
	*t = *g
	return nil
}
