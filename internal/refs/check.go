package refs

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/secret"
)

// Limits of a workspace's identifiers.
const (
	MaxIDLen            = 200
	MaxCredentialKeyLen = 200
)

// Issue is one problem (or warning) of a workspace, naming where it is. Messages never
// quote credentials or PEM.
type Issue struct {
	// FlowIndex and NodeIndex locate the node in the document; NodeIndex is -1 for an issue
	// about the flow itself.
	FlowIndex, NodeIndex int
	FlowID               string
	NodeID               string
	NodeType             string
	// Field is relative to the node (or flow): "id", "tls.caBundleRef", "credentials.password".
	Field   string
	Message string
}

// Path is the JSON path of the field: "flows[0].nodes[2].tls.caBundleRef".
func (i Issue) Path() string {
	p := fmt.Sprintf("flows[%d]", i.FlowIndex)
	if i.NodeIndex >= 0 {
		p += fmt.Sprintf(".nodes[%d]", i.NodeIndex)
	}
	if i.Field != "" {
		p += "." + i.Field
	}
	return p
}

// String names flow, node and field, then the problem.
func (i Issue) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "flow %q", i.FlowID)
	if i.NodeIndex >= 0 {
		fmt.Fprintf(&b, ", node %q", i.NodeID)
		if i.NodeType != "" {
			fmt.Fprintf(&b, " (%s)", i.NodeType)
		}
	}
	if i.Field != "" {
		b.WriteString(", " + i.Field)
	}
	return b.String() + ": " + i.Message
}

func sortIssues(is []Issue) {
	slices.SortStableFunc(is, func(a, b Issue) int {
		return cmp.Or(cmp.Compare(a.FlowIndex, b.FlowIndex), cmp.Compare(a.NodeIndex, b.NodeIndex), cmp.Compare(a.Field, b.Field))
	})
}

// Reference is one node field that names a store entry.
type Reference struct {
	EntryID  string
	FlowID   string
	NodeID   string
	NodeType string
	// Field is "tls.caBundleRef", "tls.clientCertRef", "tls.serverCertRef" or "certRef".
	Field string
	// Kind is the entry type the field must name.
	Kind                 material.Kind
	FlowIndex, NodeIndex int
}

// Extract lists every reference of the workspace in document order.
func Extract(ws *Workspace) []Reference {
	var out []Reference
	for fi, f := range ws.Flows {
		for ni, n := range f.Nodes {
			add := func(entry, field string, k material.Kind) {
				out = append(out, Reference{EntryID: entry, FlowID: f.ID, NodeID: n.ID, NodeType: n.Type,
					Field: field, Kind: k, FlowIndex: fi, NodeIndex: ni})
			}
			if n.TLS != nil {
				for _, p := range Parts {
					if r := n.TLS.Spec(p).Ref; r != "" {
						add(r, "tls."+p.Ref, p.Kind)
					}
				}
			}
			if n.Type == TypeOPCUAServer {
				if r, ok, _ := n.Prop(PropCertRef); ok && r != "" {
					add(r, PropCertRef, material.ClientPair)
				}
			}
		}
	}
	return out
}

// CheckTypes type-checks references against the tenant's entries (ID → type): a missing
// entry or one of the wrong type is an issue on the referencing field.
func CheckTypes(refs []Reference, kinds map[string]material.Kind) []Issue {
	var out []Issue
	for _, r := range refs {
		issue := func(msg string) {
			out = append(out, Issue{FlowIndex: r.FlowIndex, NodeIndex: r.NodeIndex, FlowID: r.FlowID,
				NodeID: r.NodeID, NodeType: r.NodeType, Field: r.Field, Message: msg})
		}
		k, ok := kinds[r.EntryID]
		switch {
		case !ok:
			issue(fmt.Sprintf("names %q, which is no entry of this tenant's certificate store", r.EntryID))
		case k != r.Kind:
			issue(fmt.Sprintf("names %q, a %s; it must name a %s", r.EntryID, k, r.Kind))
		}
	}
	sortIssues(out)
	return out
}

// StoredSecrets answers for the write-only values already stored, so a {"set": true}
// marker can be checked and a part given half new, half kept can be inspected whole.
type StoredSecrets interface {
	// Has reports whether node nodeID has a stored value under name.
	Has(nodeID, name string) bool
	// Open returns the stored value.
	Open(nodeID, name string) (secret.String, error)
}

// Checker validates a workspace before it is deployed.
type Checker struct {
	// Tenant and Roots confine direct file paths (LOOPZE_FILE_ROOTS).
	Tenant string
	Roots  material.Roots
	// Now dates the expiry warnings.
	Now time.Time
	// Stored answers for {"set": true} markers; nil accepts them unchecked.
	Stored StoredSecrets
	// Budget admits the key derivations of direct files (a PKCS#12); nil derives at once.
	Budget material.Budget
}

// Check returns every problem of the workspace (errs non-empty: refuse the deploy) and the
// warnings that do not stop it (expired material, unreadable direct files, legacy
// opcua-server properties). References are not looked up here: see Extract and CheckTypes.
// ctx bounds the reading of direct files.
func (c Checker) Check(ctx context.Context, ws *Workspace) (errs, warnings []Issue) {
	flowIDs := make(map[string]int, len(ws.Flows))
	nodeIDs := map[string]string{}
	for fi, f := range ws.Flows {
		flowIssue := func(field, msg string) {
			errs = append(errs, Issue{FlowIndex: fi, NodeIndex: -1, FlowID: f.ID, Field: field, Message: msg})
		}
		switch {
		case f.ID == "":
			flowIssue("id", "is required")
		case utf8.RuneCountInString(f.ID) > MaxIDLen:
			flowIssue("id", fmt.Sprintf("is longer than %d characters", MaxIDLen))
		default:
			if prev, dup := flowIDs[f.ID]; dup {
				flowIssue("id", fmt.Sprintf("is also the ID of flows[%d]: flow IDs must be unique", prev))
			} else {
				flowIDs[f.ID] = fi
			}
		}
		for ni, n := range f.Nodes {
			nc := nodeCheck{ctx: ctx, c: c, fi: fi, ni: ni, f: f, n: n}
			nc.run(nodeIDs)
			errs = append(errs, nc.errs...)
			warnings = append(warnings, nc.warnings...)
		}
	}
	sortIssues(errs)
	sortIssues(warnings)
	return errs, warnings
}

// nodeCheck collects the issues of one node.
type nodeCheck struct {
	ctx            context.Context
	c              Checker
	fi, ni         int
	f              *Flow
	n              *Node
	errs, warnings []Issue
}

func (nc *nodeCheck) issue(field, msg string) Issue {
	return Issue{FlowIndex: nc.fi, NodeIndex: nc.ni, FlowID: nc.f.ID, NodeID: nc.n.ID, NodeType: nc.n.Type, Field: field, Message: msg}
}

func (nc *nodeCheck) fail(field, format string, args ...any) {
	nc.errs = append(nc.errs, nc.issue(field, fmt.Sprintf(format, args...)))
}

func (nc *nodeCheck) warn(field, format string, args ...any) {
	nc.warnings = append(nc.warnings, nc.issue(field, fmt.Sprintf(format, args...)))
}

func (nc *nodeCheck) run(seen map[string]string) {
	n := nc.n
	switch {
	case n.ID == "":
		nc.fail("id", "is required")
	case utf8.RuneCountInString(n.ID) > MaxIDLen:
		nc.fail("id", "is longer than %d characters", MaxIDLen)
	default:
		if prev, dup := seen[n.ID]; dup {
			nc.fail("id", "is also the ID of a node in flow %q: node IDs must be unique across the workspace", prev)
		} else {
			seen[n.ID] = nc.f.ID
		}
	}
	if n.Type == "" {
		nc.fail("type", "is required")
	}
	for k, v := range n.Credentials {
		switch {
		case k == "" || utf8.RuneCountInString(k) > MaxCredentialKeyLen:
			nc.fail("credentials", "keys must be 1 to %d characters long", MaxCredentialKeyLen)
		case v.Keep && nc.c.Stored != nil && !nc.c.Stored.Has(n.ID, SecretName(k)):
			nc.fail("credentials."+k, `is {"set": true} but nothing is stored to keep: send the value`)
		}
	}
	if n.TLS != nil {
		for _, p := range Parts {
			nc.part(p, n.TLS.Spec(p))
		}
	}
	if n.Type == TypeOPCUAServer {
		nc.opcua()
	}
}

// part checks one TLS part: one way only, complete, absolute paths inside the roots,
// inline PEM that parses.
func (nc *nodeCheck) part(p Part, s *PartSpec) {
	var ways []string
	if s.Ref != "" {
		ways = append(ways, p.Ref)
	}
	if s.CertFile != "" || s.KeyFile != "" {
		ways = append(ways, nonEmpty(fieldIf(p.CertFile, s.CertFile != ""), fieldIf(p.KeyFile, s.KeyFile != ""))...)
	}
	if s.CertPEM != nil || s.KeyPEM != nil {
		ways = append(ways, nonEmpty(fieldIf(p.CertPEM, s.CertPEM != nil), fieldIf(p.KeyPEM, s.KeyPEM != nil))...)
	}
	kinds := 0
	for _, used := range []bool{s.Ref != "", s.CertFile != "" || s.KeyFile != "", s.CertPEM != nil || s.KeyPEM != nil} {
		if used {
			kinds++
		}
	}
	if kinds > 1 {
		nc.fail("tls."+ways[0], "the %s part is given more than one way (%s): use a reference, files or inline PEM, not several",
			p.Name, strings.Join(ways, ", "))
		return
	}
	switch {
	case s.CertFile != "" || s.KeyFile != "":
		nc.files(p, "tls.", p.CertFile, p.KeyFile, s.CertFile, s.KeyFile)
	case s.CertPEM != nil || s.KeyPEM != nil:
		nc.inline(p, s)
	}
}

func fieldIf(f string, ok bool) string {
	if ok {
		return f
	}
	return ""
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// files checks direct paths: both halves of a pair, absolute, admitted by the file roots.
// A file that cannot be read now, or does not parse, is only a warning: the tool that
// rotates it may not have written it yet, and every connection reads it afresh anyway.
func (nc *nodeCheck) files(p Part, prefix, certField, keyField, certPath, keyPath string) {
	kind := p.Kind
	bad := false
	check := func(field, path, what string) {
		switch {
		case path == "":
			nc.fail(prefix+field, "is required with %s%s: a %s needs %s", prefix, otherField(p, field), kind, what)
			bad = true
		case !filepath.IsAbs(path):
			nc.fail(prefix+field, "must be an absolute path")
			bad = true
		}
	}
	check(certField, certPath, "a certificate file")
	if kind.IsPair() {
		check(keyField, keyPath, "a private key file")
	}
	if bad {
		return
	}
	fields := material.Fields{Cert: prefix + certField, Key: prefix + keyField}
	m, issues, err := nc.c.Roots.LoadFiles(nc.ctx, kind, nc.c.Tenant, certPath, keyPath, fields, nc.c.Now, nc.c.Budget)
	if err != nil {
		// Direct files are checked for warnings only, and every connection reads them
		// again: a check that cannot run now does not hold the deploy up.
		nc.warn(fields.Cert, "was not checked now (%s); every connection reads the file afresh", err.Error())
		return
	}
	for _, is := range issues {
		// LoadFiles reports read errors as text; a path outside the roots is a refusal.
		if strings.Contains(is.Message, material.ErrOutsideRoots.Error()) {
			nc.fail(is.Field, "%s", is.Message)
			continue
		}
		nc.warn(is.Field, "%s (every connection reads the file afresh, so this may resolve itself)", is.Message)
	}
	if m != nil {
		for _, w := range m.Warnings {
			nc.warn(w.Field, "%s", w.Message)
		}
	}
}

func otherField(p Part, field string) string {
	if field == p.CertFile {
		return p.KeyFile
	}
	return p.CertFile
}

// inline checks inline PEM: a pair needs both halves; new values must parse together with
// whatever the markers keep.
func (nc *nodeCheck) inline(p Part, s *PartSpec) {
	if s.CertPEM == nil {
		nc.fail("tls."+p.CertPEM, "is required with tls.%s", p.KeyPEM)
		return
	}
	if p.Kind.IsPair() && s.KeyPEM == nil {
		nc.fail("tls."+p.KeyPEM, "is required with tls.%s: a %s needs a private key", p.CertPEM, p.Kind)
		return
	}
	vals := []*Value{s.CertPEM, s.KeyPEM}
	fields := []string{p.CertPEM, p.KeyPEM}
	texts := make([]secret.PEM, 2)
	allKept, anyKept := true, false
	for i, v := range vals {
		if v == nil {
			continue
		}
		if !v.Keep {
			allKept = false
			texts[i] = secret.PEM(v.Text)
			continue
		}
		anyKept = true
		if nc.c.Stored == nil {
			continue
		}
		name := PEMSecretName(fields[i])
		if !nc.c.Stored.Has(nc.n.ID, name) {
			nc.fail("tls."+fields[i], `is {"set": true} but nothing is stored to keep: send the PEM`)
			return
		}
		if texts[i] == nil {
			stored, err := nc.c.Stored.Open(nc.n.ID, name)
			if err != nil {
				nc.fail("tls."+fields[i], "the stored value cannot be opened: %s", err.Error())
				return
			}
			texts[i] = secret.PEM(stored)
		}
	}
	if allKept || (anyKept && nc.c.Stored == nil) {
		// Stored values were checked when they were deployed; without them, half a pair
		// cannot be judged.
		return
	}
	m, issues := material.Inspect(p.Kind, texts[0], texts[1],
		material.Fields{Cert: "tls." + p.CertPEM, Key: "tls." + p.KeyPEM}, nc.c.Now)
	for _, is := range issues {
		nc.fail(is.Field, "%s", is.Message)
	}
	if m != nil {
		for _, w := range m.Warnings {
			nc.warn(w.Field, "%s", w.Message)
		}
	}
}

// opcua checks an opcua-server node's certRef and legacy file properties.
func (nc *nodeCheck) opcua() {
	n := nc.n
	ref, hasRef, err := n.Prop(PropCertRef)
	if err != nil {
		nc.fail(PropCertRef, "must be a string")
	}
	cf, hasCF, errCF := n.Prop(PropLegacyCertFile)
	kf, hasKF, errKF := n.Prop(PropLegacyKeyFile)
	if errCF != nil {
		nc.fail(PropLegacyCertFile, "must be a string")
	}
	if errKF != nil {
		nc.fail(PropLegacyKeyFile, "must be a string")
	}
	legacy := (hasCF && cf != "") || (hasKF && kf != "")
	if n.TLS != nil && !n.TLS.ClientCert.Empty() && ((hasRef && ref != "") || legacy) {
		nc.fail(PropCertRef, "an opcua-server node takes its client pair from certRef; it cannot also set tls.clientCert*")
	}
	if !legacy {
		return
	}
	if hasRef && ref != "" {
		nc.fail(PropLegacyCertFile, "is a legacy property that certRef replaces: remove clientCertFile and clientKeyFile")
		return
	}
	nc.warn(PropLegacyCertFile, "clientCertFile/clientKeyFile on an opcua-server node are deprecated: use certRef to a client-pair entry (the OPC UA migration converts them at the next start)")
	nc.files(Part{Name: "clientCert", Kind: material.ClientPair, CertFile: PropLegacyCertFile, KeyFile: PropLegacyKeyFile},
		"", PropLegacyCertFile, PropLegacyKeyFile, cf, kf)
}
