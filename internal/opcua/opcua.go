// Package opcua is the OPC UA migration run at the first start after an upgrade: every
// opcua-server node that still names its client pair with the legacy clientCertFile and
// clientKeyFile properties gets a client-pair store entry opcua-<nodeID> (source file, the
// same paths), a certRef to it, and the legacy properties removed, so the deprecation
// warning stops firing on every deploy.
//
// The run is idempotent and converges when interrupted: entries are created before the
// workspace changes, an entry left by an interrupted run (same ID, same paths) is reused,
// and the workspace changes in one deploy transaction, guarded by its version so a deploy
// made meanwhile is never overwritten.
package opcua

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/workspace"
)

// Steps of a tenant's migration, as Hook sees them.
const (
	// StepEntry follows the creation (or reuse) of one node's entry.
	StepEntry = "entry"
	// StepDeploy precedes the deploy that moves the nodes to certRef.
	StepDeploy = "deploy"
	// StepDone follows that deploy.
	StepDone = "done"
)

// EntryPrefix starts the ID of every entry the migration creates.
const EntryPrefix = "opcua-"

// maxDeployAttempts bounds the retries when a deploy made meanwhile moved the workspace.
const maxDeployAttempts = 5

// Migrator runs the migration over every tenant.
type Migrator struct {
	Pool      *pgxpool.Pool
	Catalog   *catalog.Service
	Workspace *workspace.Service
	Logger    *slog.Logger
	// Hook, when set, is called between steps with the tenant, the step and the node (for
	// StepEntry); an error stops the run there, as a crash would. Tests interrupt with it.
	Hook func(tenant, step, nodeID string) error
}

// Result counts what a run did.
type Result struct {
	// Migrated nodes now use certRef; Skipped nodes keep their legacy properties (their
	// files cannot be read, or the entry ID is taken by something else), with a WARN.
	Migrated, Skipped int
}

func (m *Migrator) hook(tenant, step, nodeID string) error {
	if m.Hook == nil {
		return nil
	}
	if err := m.Hook(tenant, step, nodeID); err != nil {
		return fmt.Errorf("opcua migration of tenant %s stopped at %s %s: %w", tenant, step, nodeID, err)
	}
	return nil
}

// Run migrates every tenant. A tenant whose workspace cannot be deployed as it is (a file
// root changed since) is logged and left as it is; database errors stop the run.
func (m *Migrator) Run(ctx context.Context) (Result, error) {
	var total Result
	tenants, err := repo.ListTenants(ctx, m.Pool)
	if err != nil {
		return total, fmt.Errorf("opcua migration: %w", err)
	}
	for _, t := range tenants {
		r, err := m.tenant(ctx, t.ID)
		total.Migrated += r.Migrated
		total.Skipped += r.Skipped
		if errors.Is(err, workspace.ErrInvalid) {
			m.Logger.Error("opcua migration: the saved workspace does not deploy as it is; its opcua-server nodes keep clientCertFile/clientKeyFile",
				"tenant", t.ID, "err", err)
			continue
		}
		if err != nil {
			return total, err
		}
	}
	if total.Migrated > 0 || total.Skipped > 0 {
		m.Logger.Info("opcua migration finished", "migrated", total.Migrated, "skipped", total.Skipped)
	}
	return total, nil
}

func (m *Migrator) tenant(ctx context.Context, tenant string) (Result, error) {
	for range maxDeployAttempts {
		res, err := m.attempt(ctx, tenant)
		if !errors.Is(err, repo.ErrVersionMismatch) {
			return res, err
		}
		m.Logger.Info("opcua migration: the workspace changed meanwhile; reading it again", "tenant", tenant)
	}
	return Result{}, fmt.Errorf("opcua migration of tenant %s: the workspace kept changing", tenant)
}

func (m *Migrator) attempt(ctx context.Context, tenant string) (Result, error) {
	var res Result
	saved, err := m.Workspace.Document(ctx, tenant)
	if err != nil {
		return res, fmt.Errorf("opcua migration of tenant %s: %w", tenant, err)
	}
	ws, err := saved.Workspace()
	if err != nil {
		return res, fmt.Errorf("opcua migration of tenant %s: %w", tenant, err)
	}
	for _, f := range ws.Flows {
		for _, n := range f.Nodes {
			certPath, keyPath, legacy := legacyFiles(n)
			if !legacy {
				continue
			}
			id := EntryID(n.ID)
			ok, err := m.ensureEntry(ctx, tenant, n.ID, id, certPath, keyPath)
			if err != nil {
				return res, err
			}
			if !ok {
				res.Skipped++
				continue
			}
			n.SetProp(refs.PropCertRef, id)
			n.SetProp(refs.PropLegacyCertFile, "")
			n.SetProp(refs.PropLegacyKeyFile, "")
			res.Migrated++
			if err := m.hook(tenant, StepEntry, n.ID); err != nil {
				return res, err
			}
		}
	}
	if res.Migrated == 0 {
		return res, nil
	}
	if err := m.hook(tenant, StepDeploy, ""); err != nil {
		return res, err
	}
	if _, err := m.Workspace.Deploy(ctx, tenant, ws, saved.Version); err != nil {
		return Result{}, fmt.Errorf("opcua migration of tenant %s: deploy: %w", tenant, err)
	}
	m.Logger.Info("opcua migration: opcua-server nodes now use certRef", "tenant", tenant, "nodes", res.Migrated)
	return res, m.hook(tenant, StepDone, "")
}

// legacyFiles returns an opcua-server node's legacy paths, and whether it has any.
func legacyFiles(n *refs.Node) (certPath, keyPath string, ok bool) {
	if n.Type != refs.TypeOPCUAServer {
		return "", "", false
	}
	certPath, _, _ = n.Prop(refs.PropLegacyCertFile)
	keyPath, _, _ = n.Prop(refs.PropLegacyKeyFile)
	return certPath, keyPath, certPath != "" || keyPath != ""
}

// ensureEntry makes sure entry id is a file client-pair over the node's paths. An entry
// left by an interrupted run, or by another replica migrating at the same time, is reused;
// an entry of that ID that is something else is left alone and the node skipped.
func (m *Migrator) ensureEntry(ctx context.Context, tenant, nodeID, id, certPath, keyPath string) (bool, error) {
	e, err := m.Catalog.Get(ctx, tenant, id)
	if errors.Is(err, repo.ErrNotFound) {
		name := "OPC UA client " + nodeID
		if r := []rune(name); len(r) > catalog.MaxNameLen {
			name = string(r[:catalog.MaxNameLen])
		}
		typ, src := string(material.ClientPair), catalog.SourceFile
		notes := "Created by the OPC UA migration from the clientCertFile/clientKeyFile of opcua-server node " + nodeID + "."
		_, err = m.Catalog.Create(ctx, tenant, catalog.Input{ID: id, Name: &name, Type: &typ, Source: &src, Notes: &notes,
			CertPath: &certPath, KeyPath: &keyPath})
		var ve *catalog.ValidationError
		switch {
		case errors.As(err, &ve):
			m.Logger.Warn("opcua migration: the node's files do not make a client pair; it keeps clientCertFile/clientKeyFile",
				"tenant", tenant, "node", nodeID, "entry", id, "problem", ve.Error())
			return false, nil
		case errors.Is(err, repo.ErrDuplicate):
			e, err = m.Catalog.Get(ctx, tenant, id) // another replica made it just now
		case err == nil:
			m.Logger.Info("opcua migration: entry created", "tenant", tenant, "node", nodeID, "entry", id)
			return true, nil
		}
	}
	if err != nil {
		return false, fmt.Errorf("opcua migration of tenant %s, node %s: %w", tenant, nodeID, err)
	}
	if e.Type != material.ClientPair || e.Source != catalog.SourceFile || e.CertPath != certPath || e.KeyPath != keyPath {
		m.Logger.Warn("opcua migration: the entry ID is taken by a different entry; the node keeps clientCertFile/clientKeyFile",
			"tenant", tenant, "node", nodeID, "entry", id)
		return false, nil
	}
	return true, nil
}

var slugChars = regexp.MustCompile(`^[a-z0-9_-]+$`)

// EntryID is the deterministic ID of the entry migrated from node nodeID: opcua-<nodeID>
// when that is a valid entry ID. Otherwise the node ID is normalised (lower case, every
// other character '-', runs collapsed, cut to fit 64 characters) and, since that loses
// information and two nodes could normalise alike, suffixed with the first 8 hex digits of
// the SHA-256 of the original ID: Node-RED's "7f3a.9b21" becomes opcua-7f3a-9b21-<hash>.
func EntryID(nodeID string) string {
	room := 64 - len(EntryPrefix)
	if len(nodeID) <= room && slugChars.MatchString(nodeID) {
		return EntryPrefix + nodeID
	}
	sum := sha256.Sum256([]byte(nodeID))
	suffix := hex.EncodeToString(sum[:])[:8]
	var b strings.Builder
	for _, r := range strings.ToLower(nodeID) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		case !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	norm := strings.Trim(b.String(), "-")
	if max := room - 1 - len(suffix); len(norm) > max {
		norm = strings.TrimRight(norm[:max], "-")
	}
	if norm == "" {
		return EntryPrefix + suffix
	}
	return EntryPrefix + norm + "-" + suffix
}
