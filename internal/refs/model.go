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
	"encoding/json"
	"fmt"
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
