package workspace

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/repo"
)

// recordDeploy audits a deploy in its transaction: one record for the workspace with the
// references added and removed, and one per node whose stored secrets changed, naming
// them (never their values).
func recordDeploy(ctx context.Context, tx pgx.Tx, tenant string, res *Result, added, removed int,
	set []repo.NodeSecret, cleared []repo.NodeSecretKey) error {
	err := audit.Record(ctx, tx, audit.Event{Tenant: tenant, Action: audit.WorkspaceDeploy, Target: "workspace",
		Detail: map[string]any{"version": res.Version, "references": res.References,
			"referencesAdded": added, "referencesRemoved": removed}})
	if err != nil {
		return err
	}
	type names struct{ set, cleared []string }
	byNode := map[string]*names{}
	at := func(id string) *names {
		if byNode[id] == nil {
			byNode[id] = &names{set: []string{}, cleared: []string{}}
		}
		return byNode[id]
	}
	for _, s := range set {
		at(s.NodeID).set = append(at(s.NodeID).set, s.Name)
	}
	for _, k := range cleared {
		at(k.NodeID).cleared = append(at(k.NodeID).cleared, k.Name)
	}
	ids := make([]string, 0, len(byNode))
	for id := range byNode {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		n := byNode[id]
		slices.Sort(n.set)
		slices.Sort(n.cleared)
		err := audit.Record(ctx, tx, audit.Event{Tenant: tenant, Action: audit.NodeCredentials, Target: audit.NodeTarget(id),
			Detail: map[string]any{"set": n.set, "removed": n.cleared}})
		if err != nil {
			return err
		}
	}
	return nil
}

// recordRefusedDeploy audits a deploy refused as invalid, in a transaction of its own
// (the deploy's rolled back). Failing to write it is logged; the refusal still answers.
func (s *Service) recordRefusedDeploy(ctx context.Context, tenant string, ve *ValidationError) {
	err := audit.RecordAlone(ctx, s.Pool, audit.Event{Tenant: tenant, Action: audit.WorkspaceDeployRefused,
		Target: "workspace", Detail: map[string]any{"problems": len(ve.Issues)}})
	if err != nil {
		s.Logger.Error("audit record of a refused deploy failed", "tenant", tenant, "err", err)
	}
}
