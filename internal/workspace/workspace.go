// Package workspace is the deploy service: it validates a tenant's whole workspace
// (internal/refs), type-checks every reference against the certificate store, seals node
// credentials and inline TLS PEM into node_secrets, stores the workspace document without
// them, replaces the tenant's reference rows and moves the tenant's generation, all in one
// transaction, so a refused deploy leaves nothing behind and a concurrent delete of a
// referenced entry is refused by the database itself. It also answers what a saved node's
// tls block resolves to now.
package workspace

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/sealing"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/tenantkey"
)

// Sentinel errors callers branch on, besides repo.ErrVersionMismatch.
var (
	// ErrInvalid wraps a *ValidationError.
	ErrInvalid = errors.New("invalid workspace")
	// ErrNodeNotFound means the saved workspace has no such flow or node.
	ErrNodeNotFound = errors.New("no such node in the saved workspace")
	// ErrConcurrentChange means an entry the deploy references disappeared while it ran.
	ErrConcurrentChange = errors.New("the certificate store changed during the deploy")
)

// ValidationError lists every problem of a refused deploy, each naming flow, node and field.
type ValidationError struct {
	Issues []refs.Issue
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		parts[i] = is.String()
	}
	return "invalid workspace: " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Service deploys and reads workspaces.
type Service struct {
	Pool *pgxpool.Pool
	// Keys seal each tenant's node secrets under that tenant's keys.
	Keys  *tenantkey.Keys
	Roots material.Roots
	// KDF admits the key derivations of direct files a deploy checks; nil derives at once.
	KDF      material.Budget
	Logger   *slog.Logger
	Resolver *resolver.Resolver
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Changed, when set, is told of every deploy once its transaction ended (the
	// catalogue's cache, which must not serve reference counts from before it).
	Changed func(tenant string)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Result is a saved deploy.
type Result struct {
	Version    int64
	UpdatedAt  time.Time
	References int
	// Warnings did not stop the deploy: expired material, unreadable direct files, legacy
	// opcua-server properties.
	Warnings []refs.Issue
}

// Deploy replaces the tenant's workspace. ifVersion, when non-zero, is the version the
// caller last saw (repo.ErrVersionMismatch when it moved). A workspace with problems is
// refused whole with a *ValidationError listing all of them.
//
// Node credentials: a node without a credentials object keeps what is stored; within the
// object a string sets a key, "" or null clears it, {"set": true} keeps it, and an
// omitted key is kept. Inline PEM in a tls block is declarative: a string sets it,
// {"set": true} keeps it, and an absent field removes it. A removed node's secrets go.
func (s *Service) Deploy(ctx context.Context, tenant string, ws *refs.Workspace, ifVersion int64) (*Result, error) {
	res := &Result{}
	if s.Changed != nil {
		defer s.Changed(tenant)
	}
	ring, err := s.Keys.Ring(ctx, tenant)
	if err != nil {
		return nil, err
	}
	err = db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		// The tenant row lock serialises this deploy with every other write of the tenant
		// (catalogue changes take it first too), so the checks below stay true until commit.
		if _, err := repo.BumpGeneration(ctx, tx, tenant); err != nil {
			return err
		}
		keys, err := repo.ListNodeSecretKeys(ctx, tx, tenant)
		if err != nil {
			return err
		}
		stored := newStoredSecrets(ctx, tx, ring, tenant, keys)
		checker := refs.Checker{Tenant: tenant, Roots: s.Roots, Now: s.now(), Stored: stored, Budget: s.KDF}
		issues, warnings := checker.Check(ctx, ws)
		if stored.err != nil {
			return stored.err
		}
		list := refs.Extract(ws)
		kinds, err := repo.EntryKinds(ctx, tx, tenant, entryIDs(list))
		if err != nil {
			return err
		}
		issues = append(issues, refs.CheckTypes(list, kinds)...)
		if len(issues) > 0 {
			sortIssues(issues)
			return &ValidationError{Issues: issues}
		}
		set, cleared, err := s.saveSecrets(ctx, tx, tenant, ws, stored)
		if err != nil {
			return err
		}
		doc := ws.AppendStripped(nil)
		if res.Version, res.UpdatedAt, err = repo.SaveWorkspace(ctx, tx, tenant, doc, ifVersion); err != nil {
			return err
		}
		added, removed, err := replaceReferences(ctx, tx, tenant, list)
		if err != nil {
			return err
		}
		res.References, res.Warnings = len(list), warnings
		return recordDeploy(ctx, tx, tenant, res, added, removed, set, cleared)
	})
	var ve *ValidationError
	if errors.As(err, &ve) {
		s.recordRefusedDeploy(ctx, tenant, ve)
	}
	if err != nil {
		return nil, err
	}
	s.logWarnings(tenant, ws, res.Warnings)
	return res, nil
}

func sortIssues(is []refs.Issue) {
	slices.SortStableFunc(is, func(a, b refs.Issue) int {
		if c := a.FlowIndex - b.FlowIndex; c != 0 {
			return c
		}
		if c := a.NodeIndex - b.NodeIndex; c != 0 {
			return c
		}
		return strings.Compare(a.Field, b.Field)
	})
}

// logWarnings logs one WARN per warning, and one deprecation WARN per opcua-server node
// that still carries the legacy file properties.
func (s *Service) logWarnings(tenant string, ws *refs.Workspace, warnings []refs.Issue) {
	for _, f := range ws.Flows {
		for _, n := range f.Nodes {
			if n.Type != refs.TypeOPCUAServer {
				continue
			}
			cf, _, _ := n.Prop(refs.PropLegacyCertFile)
			kf, _, _ := n.Prop(refs.PropLegacyKeyFile)
			if cf != "" || kf != "" {
				s.Logger.Warn("opcua-server node uses the deprecated clientCertFile/clientKeyFile; use certRef to a client-pair entry",
					"tenant", tenant, "flow", f.ID, "node", n.ID)
			}
		}
	}
	for _, w := range warnings {
		if w.NodeType == refs.TypeOPCUAServer && w.Field == refs.PropLegacyCertFile && strings.Contains(w.Message, "deprecated") {
			continue // logged above, once per node
		}
		s.Logger.Warn("deploy warning", "tenant", tenant, "flow", w.FlowID, "node", w.NodeID, "field", w.Field, "warning", w.Message)
	}
}

func entryIDs(list []refs.Reference) []string {
	seen := make(map[string]bool, len(list))
	ids := make([]string, 0, len(list))
	for _, r := range list {
		if !seen[r.EntryID] {
			seen[r.EntryID] = true
			ids = append(ids, r.EntryID)
		}
	}
	return ids
}

// replaceReferences makes the tenant's reference rows equal list, touching only the rows
// that change, so redeploying an unchanged workspace writes no reference rows at all.
func replaceReferences(ctx context.Context, tx pgx.Tx, tenant string, list []refs.Reference) (added, removed int, err error) {
	existing, err := repo.ListTenantReferences(ctx, tx, tenant)
	if err != nil {
		return 0, 0, err
	}
	type key struct{ entry, flow, node, nodeType, field string }
	want := make(map[key]bool, len(list))
	for _, r := range list {
		want[key{r.EntryID, r.FlowID, r.NodeID, r.NodeType, r.Field}] = true
	}
	var drop []repo.Reference
	for _, r := range existing {
		k := key{r.EntryID, r.FlowID, r.NodeID, r.NodeType, r.Field}
		if want[k] {
			delete(want, k) // already stored
			continue
		}
		drop = append(drop, r)
	}
	add := make([]repo.Reference, 0, len(want))
	for _, r := range list {
		if want[key{r.EntryID, r.FlowID, r.NodeID, r.NodeType, r.Field}] {
			add = append(add, repo.Reference{EntryID: r.EntryID, FlowID: r.FlowID, NodeID: r.NodeID, NodeType: r.NodeType, Field: r.Field})
		}
	}
	// A reference that moves to another node field of the same entry (a node replaced by
	// another with the same reference) is rewritten in place, which costs the database no
	// foreign key check; only the rest is deleted and inserted.
	dropped := make(map[string][]repo.Reference, 1)
	for _, r := range drop {
		dropped[r.EntryID] = append(dropped[r.EntryID], r)
	}
	var moves []repo.ReferenceMove
	insert := add[:0:0]
	for _, r := range add {
		if from := dropped[r.EntryID]; len(from) > 0 {
			moves = append(moves, repo.ReferenceMove{From: from[len(from)-1], To: r})
			dropped[r.EntryID] = from[:len(from)-1]
			continue
		}
		insert = append(insert, r)
	}
	remove := drop[:0:0]
	for _, r := range drop {
		if rest := dropped[r.EntryID]; len(rest) > 0 && rest[0] == r {
			remove = append(remove, r)
			dropped[r.EntryID] = rest[1:]
		}
	}
	if err := repo.MoveReferences(ctx, tx, tenant, moves); err != nil {
		return 0, 0, err
	}
	if err := repo.DeleteReferences(ctx, tx, tenant, remove); err != nil {
		return 0, 0, err
	}
	if err := repo.InsertReferences(ctx, tx, tenant, insert); err != nil {
		if errors.Is(err, repo.ErrReferenced) {
			return 0, 0, fmt.Errorf("store references: %w", ErrConcurrentChange)
		}
		return 0, 0, err
	}
	return len(add), len(drop), nil
}

// saveSecrets seals the new write-only values of ws and removes the cleared ones and those
// of removed nodes; kept values are not touched. It returns what it set and removed, by
// name, for the audit trail.
func (s *Service) saveSecrets(ctx context.Context, tx pgx.Tx, tenant string, ws *refs.Workspace, stored *storedSecrets) ([]repo.NodeSecret, []repo.NodeSecretKey, error) {
	var (
		upsert []repo.NodeSecret
		keep   = map[repo.NodeSecretKey]bool{}
	)
	set := func(nodeID, name string, v refs.Value) error {
		k := repo.NodeSecretKey{NodeID: nodeID, Name: name}
		switch {
		case v.Keep:
			keep[k] = true
		case v.Cleared():
		default:
			sealed, err := stored.ring.Seal([]byte(v.Text.Reveal()), sealing.NodeSecret(tenant, nodeID, name))
			if err != nil {
				return fmt.Errorf("seal %s of node %s: %w", name, nodeID, err)
			}
			upsert = append(upsert, repo.NodeSecret{NodeID: nodeID, Name: name, Sealed: sealed, KeyID: stored.ring.CurrentKeyID()})
			keep[k] = true
		}
		return nil
	}
	nodes := map[string]*refs.Node{}
	for _, f := range ws.Flows {
		for _, n := range f.Nodes {
			nodes[n.ID] = n
			for k, v := range n.Credentials {
				if err := set(n.ID, refs.SecretName(k), v); err != nil {
					return nil, nil, err
				}
			}
			if n.TLS == nil {
				continue
			}
			for _, p := range refs.Parts {
				sp := n.TLS.Spec(p)
				for _, x := range []struct {
					field string
					v     *refs.Value
				}{{p.CertPEM, sp.CertPEM}, {p.KeyPEM, sp.KeyPEM}} {
					if x.v != nil {
						if err := set(n.ID, refs.PEMSecretName(x.field), *x.v); err != nil {
							return nil, nil, err
						}
					}
				}
			}
		}
	}
	var drop []repo.NodeSecretKey
	for k := range stored.keys {
		if keep[k] {
			continue
		}
		n, ok := nodes[k.NodeID]
		if ok {
			if key, isCred := refs.IsCredentialName(k.Name); isCred {
				v, mentioned := n.Credentials[key]
				if !mentioned || !v.Cleared() {
					continue // an omitted credential keeps its stored value
				}
			}
		}
		drop = append(drop, k)
	}
	slices.SortFunc(drop, func(a, b repo.NodeSecretKey) int {
		return strings.Compare(a.NodeID+"\x00"+a.Name, b.NodeID+"\x00"+b.Name)
	})
	if err := repo.DeleteNodeSecrets(ctx, tx, tenant, drop); err != nil {
		return nil, nil, err
	}
	return upsert, drop, repo.UpsertNodeSecrets(ctx, tx, tenant, upsert)
}

// storedSecrets answers refs.Checker about the values already stored, opening one only
// when a part mixes a kept half with a new one.
type storedSecrets struct {
	ctx    context.Context
	tx     pgx.Tx
	ring   *envelope.Ring
	tenant string
	keys   map[repo.NodeSecretKey]bool
	err    error
}

func newStoredSecrets(ctx context.Context, tx pgx.Tx, ring *envelope.Ring, tenant string, keys []repo.NodeSecretKey) *storedSecrets {
	m := make(map[repo.NodeSecretKey]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return &storedSecrets{ctx: ctx, tx: tx, ring: ring, tenant: tenant, keys: m}
}

// Has implements refs.StoredSecrets.
func (s *storedSecrets) Has(nodeID, name string) bool {
	return s.keys[repo.NodeSecretKey{NodeID: nodeID, Name: name}]
}

// Open implements refs.StoredSecrets.
func (s *storedSecrets) Open(nodeID, name string) (secret.String, error) {
	list, err := repo.ListNodeSecrets(s.ctx, s.tx, s.tenant, nodeID)
	if err != nil {
		s.err = err
		return "", err
	}
	for _, ns := range list {
		if ns.Name == name {
			return openSecret(s.ring, s.tenant, ns)
		}
	}
	return "", fmt.Errorf("node %s has no stored %s", nodeID, name)
}

// openSecret decrypts a node secret, reloading the key ring once when another replica
// rotated the master key.
func openSecret(ring *envelope.Ring, tenant string, ns repo.NodeSecret) (secret.String, error) {
	pt, err := sealing.Open(ring, ns.Sealed, sealing.NodeSecret(tenant, ns.NodeID, ns.Name))
	if err != nil {
		return "", fmt.Errorf("open %s of node %s: %w", ns.Name, ns.NodeID, err)
	}
	return secret.String(pt), nil
}

// Node returns one node of the saved workspace with its inline TLS PEM opened (never its
// credentials), ready for BuildTLSConfig. Only that node is read from the database, not
// the whole workspace. ErrNodeNotFound when the flow or node is not there.
func (s *Service) Node(ctx context.Context, tenant, flowID, nodeID string) (*refs.Node, error) {
	var (
		doc     []byte
		secrets []repo.NodeSecret
	)
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		var err error
		if doc, err = repo.GetWorkspaceNode(ctx, tx, tenant, flowID, nodeID); err != nil {
			return err
		}
		secrets, err = repo.ListNodeSecrets(ctx, tx, tenant, nodeID)
		return err
	})
	if errors.Is(err, repo.ErrNotFound) {
		return nil, fmt.Errorf("flow %s, node %s: %w", flowID, nodeID, ErrNodeNotFound)
	}
	if err != nil {
		return nil, err
	}
	n := &refs.Node{}
	if err := json.Unmarshal(doc, n); err != nil {
		return nil, fmt.Errorf("decode saved node: %w", err)
	}
	for _, ns := range secrets {
		field, ok := strings.CutPrefix(ns.Name, "tls.")
		if !ok || n.TLS == nil {
			continue
		}
		ring, err := s.Keys.Ring(ctx, tenant)
		if err != nil {
			return nil, err
		}
		v, err := openSecret(ring, tenant, ns)
		if err != nil {
			return nil, err
		}
		for _, p := range refs.Parts {
			sp := n.TLS.Spec(p)
			switch {
			case field == p.CertPEM:
				sp.CertPEM = &refs.Value{Text: v}
			case field == p.KeyPEM && p.KeyPEM != "":
				sp.KeyPEM = &refs.Value{Text: v}
			}
		}
	}
	return n, nil
}

// NodeTLSCheck reports what a saved node's TLS resolves to now, part by part (an
// opcua-server node's certRef, or legacy files, counts as its clientCert part), and whether
// its client pair chains to its CA bundle (nil unless the node has both and they resolve).
func (s *Service) NodeTLSCheck(ctx context.Context, tenant, flowID, nodeID string) (*refs.Node, []resolver.PartReport, *material.Verification, error) {
	n, err := s.Node(ctx, tenant, flowID, nodeID)
	if err != nil {
		return nil, nil, nil, err
	}
	rep, v, err := s.Resolver.Check(ctx, tenant, n.EffectiveTLS())
	if err != nil {
		return nil, nil, nil, err
	}
	return n, rep, v, nil
}

// NodeTLSConfig builds the *tls.Config a saved node's connection init uses now.
func (s *Service) NodeTLSConfig(ctx context.Context, tenant, flowID, nodeID string) (*tls.Config, error) {
	n, err := s.Node(ctx, tenant, flowID, nodeID)
	if err != nil {
		return nil, err
	}
	return s.Resolver.BuildTLSConfig(ctx, tenant, n.EffectiveTLS())
}
