// Package refs owns the workspace model of LOOPZE (flows, nodes and their tls blocks), the
// extraction of the references nodes make to certificate-store entries, and the rules a
// workspace must obey to be deployed (its bounds, unique IDs, one way per TLS part,
// type-checked references). Turning a tls block into a *tls.Config is internal/resolver's.
//
// Nodes carry arbitrary properties besides the ones this package knows; they round-trip
// unchanged. Write-only values (node credentials, inline PEM in a tls block) are Values:
// they arrive as strings and always leave as the marker {"set": true}.
package refs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/secret"
)

// Node types and properties with a meaning of their own.
const (
	// TypeOPCUAServer is the OPC UA config node, whose client pair is the top-level certRef.
	TypeOPCUAServer = "opcua-server"
	// PropCertRef is the opcua-server node's reference to a client-pair entry.
	PropCertRef = "certRef"
	// PropLegacyCertFile and PropLegacyKeyFile are the opcua-server properties that the
	// OPC UA migration turns into a certRef; a deploy still accepts them, with a warning.
	PropLegacyCertFile = "clientCertFile"
	PropLegacyKeyFile  = "clientKeyFile"
)

// Workspace is a tenant's whole deployed configuration.
type Workspace struct {
	Flows []*Flow `json:"flows"`
}

// Flow is one tab of the editor: an ordered list of nodes.
type Flow struct {
	ID    string
	Label string
	Nodes []*Node
	// Extra holds every other property of the flow, kept verbatim.
	Extra map[string]json.RawMessage
}

// Node is one node of a flow. Its ID is unique across the whole workspace.
type Node struct {
	ID   string
	Type string
	Name string
	// TLS is the node's tls block; nil when it has none.
	TLS *TLS
	// Credentials are the node's write-only secrets by key; nil when the node sent none
	// (which keeps whatever is stored).
	Credentials map[string]Value
	// Extra holds every other property of the node, kept verbatim.
	Extra map[string]json.RawMessage
}

// PartSpec says where one TLS part comes from: a store reference, files on disk or inline
// PEM. At most one of the three ways may be used.
type PartSpec struct {
	Ref      string
	CertFile string
	KeyFile  string
	CertPEM  *Value
	KeyPEM   *Value
}

// Empty reports whether the part is not configured at all.
func (p PartSpec) Empty() bool {
	return p.Ref == "" && p.CertFile == "" && p.KeyFile == "" && p.CertPEM == nil && p.KeyPEM == nil
}

// TLS is a node's tls block.
type TLS struct {
	CABundle   PartSpec
	ClientCert PartSpec
	ServerCert PartSpec
	// ServerName overrides the name the server certificate is verified against (SNI).
	ServerName string
	// Extra holds every other property of the block, kept verbatim.
	Extra map[string]json.RawMessage
}

// Part describes one of the three TLS parts and the JSON fields that configure it.
type Part struct {
	// Name is the part's name in reports: caBundle, clientCert or serverCert.
	Name string
	// Kind is the entry type a reference for this part must name.
	Kind material.Kind
	// The JSON field names inside the tls block; KeyFile and KeyPEM are empty for caBundle.
	Ref, CertFile, KeyFile, CertPEM, KeyPEM string
}

// Parts are the TLS parts in a stable order.
var Parts = []Part{
	{Name: "caBundle", Kind: material.CABundle, Ref: "caBundleRef", CertFile: "caBundleFile", CertPEM: "caBundlePem"},
	{Name: "clientCert", Kind: material.ClientPair, Ref: "clientCertRef", CertFile: "clientCertFile", KeyFile: "clientKeyFile",
		CertPEM: "clientCertPem", KeyPEM: "clientKeyPem"},
	{Name: "serverCert", Kind: material.ServerPair, Ref: "serverCertRef", CertFile: "serverCertFile", KeyFile: "serverKeyFile",
		CertPEM: "serverCertPem", KeyPEM: "serverKeyPem"},
}

// Spec returns the block's spec for part p.
func (t *TLS) Spec(p Part) *PartSpec {
	switch p.Name {
	case "caBundle":
		return &t.CABundle
	case "clientCert":
		return &t.ClientCert
	default:
		return &t.ServerCert
	}
}

// Value is a write-only field: a node credential or an inline PEM part. On input it is a
// string (the new value; "" or null clears it) or the marker {"set": true}, which keeps the
// stored value, so a workspace read with GET deploys back unchanged. It always marshals as
// the marker: the value never leaves the server.
type Value struct {
	// Keep means "the stored value, unchanged".
	Keep bool
	// Text is the new value when Keep is false; empty clears.
	Text secret.String
}

// Cleared reports whether the value asks for removal.
func (v Value) Cleared() bool { return !v.Keep && v.Text == "" }

var setMarker = []byte(`{"set":true}`)

// MarshalJSON implements json.Marshaler: always the marker.
func (v Value) MarshalJSON() ([]byte, error) { return setMarker, nil }

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

// UnmarshalJSON implements json.Unmarshaler.
func (f *Flow) UnmarshalJSON(b []byte) error {
	g, err := parseFlow(b, "flow", false)
	if err != nil {
		return err
	}
	*f = *g
	return nil
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

// UnmarshalJSON implements json.Unmarshaler.
func (n *Node) UnmarshalJSON(b []byte) error {
	g, err := parseNode(b, "node", false)
	if err != nil {
		return err
	}
	*n = *g
	return nil
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

// UnmarshalJSON implements json.Unmarshaler.
func (t *TLS) UnmarshalJSON(b []byte) error {
	g, err := parseTLS(b, "tls", false)
	if err != nil {
		return err
	}
	*t = *g
	return nil
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

// Prop returns a string property kept in Extra; ok is false when it is absent or null.
// A property of another JSON type is an error.
func (n *Node) Prop(key string) (value string, ok bool, err error) {
	b, present := n.Extra[key]
	if !present || isNull(b) {
		return "", false, nil
	}
	if err := json.Unmarshal(b, &value); err != nil {
		return "", false, fmt.Errorf("%s must be a string", key)
	}
	return value, true, nil
}

// SetProp sets a string property in Extra; an empty value removes it.
func (n *Node) SetProp(key, value string) {
	if value == "" {
		delete(n.Extra, key)
		return
	}
	if n.Extra == nil {
		n.Extra = map[string]json.RawMessage{}
	}
	put(n.Extra, key, value)
}

// EffectiveTLS is the tls block a connection of this node uses. For an opcua-server node
// it is the client pair of its top-level certRef (or of the legacy clientCertFile and
// clientKeyFile) together with whatever its tls block says about the other parts. It is
// nil when the node configures no TLS at all.
func (n *Node) EffectiveTLS() *TLS {
	if n.Type != TypeOPCUAServer {
		return n.TLS
	}
	ref, _, _ := n.Prop(PropCertRef)
	cf, _, _ := n.Prop(PropLegacyCertFile)
	kf, _, _ := n.Prop(PropLegacyKeyFile)
	if ref == "" && cf == "" && kf == "" {
		return n.TLS
	}
	t := &TLS{}
	if n.TLS != nil {
		c := *n.TLS
		t = &c
	}
	if ref != "" {
		t.ClientCert = PartSpec{Ref: ref}
	} else {
		t.ClientCert = PartSpec{CertFile: cf, KeyFile: kf}
	}
	return t
}

// Find returns the flow and node with the given IDs, or nils.
func (w *Workspace) Find(flowID, nodeID string) (*Flow, *Node) {
	for _, f := range w.Flows {
		if f.ID != flowID {
			continue
		}
		for _, n := range f.Nodes {
			if n.ID == nodeID {
				return f, n
			}
		}
		return f, nil
	}
	return nil, nil
}

// Stripped returns a copy of the workspace without write-only values: no credentials, no
// inline PEM. It is the form that is stored as the workspace document; the values live
// sealed beside it.
func (w *Workspace) Stripped() *Workspace {
	out := &Workspace{Flows: make([]*Flow, len(w.Flows))}
	for i, f := range w.Flows {
		cf := *f
		cf.Nodes = make([]*Node, len(f.Nodes))
		for j, n := range f.Nodes {
			cn := *n
			cn.Credentials = nil
			if n.TLS != nil {
				ct := *n.TLS
				for _, p := range Parts {
					s := ct.Spec(p)
					s.CertPEM, s.KeyPEM = nil, nil
				}
				cn.TLS = &ct
			}
			cf.Nodes[j] = &cn
		}
		out.Flows[i] = &cf
	}
	return out
}

// SecretName is the node_secrets name (and the AAD field) of a node credential.
func SecretName(credentialKey string) string { return "credentials." + credentialKey }

// PEMSecretName is the node_secrets name (and the AAD field) of an inline PEM field of a
// tls block, e.g. "tls.clientKeyPem".
func PEMSecretName(field string) string { return "tls." + field }

// IsCredentialName reports whether a node secret name is a credential, and its key.
func IsCredentialName(name string) (key string, ok bool) {
	return strings.CutPrefix(name, "credentials.")
}
