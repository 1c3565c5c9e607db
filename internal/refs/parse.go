package refs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

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
	// The properties kept verbatim are slices of this copy: the caller's buffer may be
	// reused once it has its workspace.
	data = bytes.Clone(data)
	r := newReader()
	flows, err := r.top(data)
	if err != nil {
		return nil, err
	}
	if flows == nil {
		return nil, &FieldError{Path: "flows", Message: "is required (an empty workspace is {\"flows\": []})"}
	}
	if strict && len(flows) > MaxFlows {
		return nil, &FieldError{Path: "flows", Message: fmt.Sprintf("has %d flows; a workspace may have at most %d", len(flows), MaxFlows), Err: ErrRefused}
	}
	ws := &Workspace{Flows: make([]*Flow, 0, len(flows))}
	nodes := 0
	for i, rf := range flows {
		f, err := r.parseFlow(rf, "flows["+strconv.Itoa(i)+"]", strict)
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

// reader decodes the parts of one document with one jsontext decoder, each value read
// once per level it is taken apart at. It reads as encoding/json would into
// struct{ Flows []json.RawMessage } and maps of raw values: duplicated names keep the last
// (Parse refused them already), text that is not valid UTF-8 reads as U+FFFD.
type reader struct {
	dec   *jsontext.Decoder
	names []string
}

func newReader() *reader { return &reader{dec: jsontext.NewDecoder(bytes.NewReader(nil))} }

var lenient = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}

func (r *reader) reset(b []byte) { r.dec.Reset(bytes.NewReader(b), lenient...) }

// value reads the next value and returns it as a slice of b, the input being decoded.
func (r *reader) value(b []byte) ([]byte, error) {
	v, err := r.dec.ReadValue()
	if err != nil {
		return nil, err
	}
	end := int(r.dec.InputOffset())
	return b[end-len(v) : end : end], nil
}

// top reads the workspace object and returns its flows (nil when absent or null).
func (r *reader) top(data []byte) ([]json.RawMessage, error) {
	r.reset(data)
	v, err := r.value(data)
	if err != nil {
		var se *jsontext.SyntacticError
		if errors.As(err, &se) {
			return nil, &FieldError{Path: "body", Message: fmt.Sprintf("malformed JSON at byte %d", se.ByteOffset)}
		}
		return nil, &FieldError{Path: "body", Message: "malformed JSON"}
	}
	if rest := bytes.TrimLeft(data[r.dec.InputOffset():], " \t\r\n"); len(rest) > 0 && rest[0] != ']' && rest[0] != '}' {
		return nil, &FieldError{Path: "body", Message: "unexpected data after the workspace object"}
	}
	switch v[0] {
	case 'n':
		return nil, nil
	case '{':
	default:
		return nil, &FieldError{Path: "body", Message: "must be an object"}
	}
	m, _ := r.members(v)
	var (
		flows   []json.RawMessage
		typeErr error
	)
	// encoding/json matches the field name without regard to case; the last match wins,
	// and one of another type is an error whatever follows.
	for _, k := range r.names {
		if k != "flows" && !strings.EqualFold(k, "flows") {
			continue
		}
		b := m[k]
		switch b[0] {
		case 'n':
			flows = nil
		case '[':
			if flows, err = r.elements(b); err != nil {
				return nil, &FieldError{Path: "body", Message: "malformed JSON"}
			}
		default:
			if typeErr == nil {
				typeErr = &FieldError{Path: "body.flows", Message: "must be an array"}
			}
		}
	}
	if typeErr != nil {
		return nil, typeErr
	}
	return flows, nil
}

// members decodes the JSON object b into its properties, recording their names in order
// of appearance in r.names; ok is false when b is not an object.
func (r *reader) members(b []byte) (m map[string]json.RawMessage, ok bool) {
	r.reset(b)
	r.names = r.names[:0]
	if tok, err := r.dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, false
	}
	m = make(map[string]json.RawMessage, 8)
	for r.dec.PeekKind() != '}' {
		name, err := r.dec.ReadToken()
		if err != nil {
			return nil, false
		}
		k := name.String() // before the next read, which invalidates the token
		v, err := r.value(b)
		if err != nil {
			return nil, false
		}
		m[k] = v
		r.names = append(r.names, k)
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return nil, false
	}
	return m, true
}

// elements decodes the JSON array b into its elements.
func (r *reader) elements(b []byte) ([]json.RawMessage, error) {
	r.reset(b)
	if tok, err := r.dec.ReadToken(); err != nil || tok.Kind() != '[' {
		return nil, errors.New("not an array")
	}
	var out []json.RawMessage
	for r.dec.PeekKind() != ']' {
		v, err := r.value(b)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return nil, err
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return out, nil
}

// object decodes a JSON object into its properties.
func (r *reader) object(b json.RawMessage, path string) (map[string]json.RawMessage, error) {
	m, ok := r.members(b)
	if !ok {
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
	// A plain string (the usual case) needs no decoding; one with escapes goes through
	// encoding/json.
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' && bytes.IndexByte(b[1:len(b)-1], '\\') < 0 && utf8.Valid(b) {
		return string(b[1 : len(b)-1]), nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", &FieldError{Path: path + "." + key, Message: "must be a string"}
	}
	return s, nil
}

func isNull(b json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(b), []byte("null")) }

func (r *reader) parseFlow(b json.RawMessage, path string, strict bool) (*Flow, error) {
	m, err := r.object(b, path)
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
			if nodes, err = r.elements(rn); err != nil {
				return nil, &FieldError{Path: path + ".nodes", Message: "must be an array"}
			}
		}
		f.Nodes = make([]*Node, 0, len(nodes))
		for j, b := range nodes {
			n, err := r.parseNode(b, path+".nodes["+strconv.Itoa(j)+"]", strict)
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

func (r *reader) parseNode(b json.RawMessage, path string, strict bool) (*Node, error) {
	m, err := r.object(b, path)
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
			if n.TLS, err = r.parseTLS(rt, path+".tls", strict); err != nil {
				return nil, err
			}
		}
	}
	if rc, ok := m["credentials"]; ok {
		delete(m, "credentials")
		if !isNull(rc) {
			cm, err := r.object(rc, path+".credentials")
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

func (r *reader) parseTLS(b json.RawMessage, path string, strict bool) (*TLS, error) {
	m, err := r.object(b, path)
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
	g, err := newReader().parseFlow(bytes.Clone(b), "flow", false)
	if err != nil {
		return err
	}
	*f = *g
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (n *Node) UnmarshalJSON(b []byte) error {
	g, err := newReader().parseNode(bytes.Clone(b), "node", false)
	if err != nil {
		return err
	}
	*n = *g
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *TLS) UnmarshalJSON(b []byte) error {
	g, err := newReader().parseTLS(bytes.Clone(b), "tls", false)
	if err != nil {
		return err
	}
	*t = *g
	return nil
}
