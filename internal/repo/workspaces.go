package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// ExportWorkspace returns the tenant's deployed workspace document as JSON; nil when the
// tenant never deployed.
func ExportWorkspace(ctx context.Context, q db.DBTX, tenant string) ([]byte, error) {
	var flows []byte
	err := q.QueryRow(ctx, `SELECT flows::text FROM workspaces WHERE tenant_id = $1`, tenant).Scan(&flows)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return flows, mapErr("export workspace", err)
}

// ImportWorkspace stores the tenant's workspace document (JSON) as restored.
func ImportWorkspace(ctx context.Context, q db.DBTX, tenant string, flows []byte) error {
	_, err := q.Exec(ctx, `
		INSERT INTO workspaces (tenant_id, flows) VALUES ($1, $2::jsonb)
		ON CONFLICT (tenant_id) DO UPDATE SET flows = EXCLUDED.flows, version = workspaces.version + 1, updated_at = now()`,
		tenant, string(flows))
	return mapErr("import workspace", err)
}

// Workspace is the stored workspace document of a tenant, without write-only values.
type Workspace struct {
	TenantID  string
	Flows     []byte // the JSON document
	Version   int64
	UpdatedAt time.Time
}

// GetWorkspace returns the tenant's workspace; ErrNotFound before its first deploy.
func GetWorkspace(ctx context.Context, q db.DBTX, tenant string) (*Workspace, error) {
	w := &Workspace{TenantID: tenant}
	err := q.QueryRow(ctx, `SELECT flows, version, updated_at FROM workspaces WHERE tenant_id = $1`, tenant).
		Scan(&w.Flows, &w.Version, &w.UpdatedAt)
	if err != nil {
		return nil, mapErr("get workspace", err)
	}
	return w, nil
}

// GetWorkspaceNode returns one node of the tenant's workspace as its JSON document, found
// by a jsonb path query so that the rest of the workspace never leaves the database;
// ErrNotFound when there is no workspace, or no such node in that flow.
func GetWorkspaceNode(ctx context.Context, q db.DBTX, tenant, flowID, nodeID string) ([]byte, error) {
	var node []byte
	err := q.QueryRow(ctx, `
		SELECT jsonb_path_query_first(flows, '$.flows[*] ? (@.id == $flow).nodes[*] ? (@.id == $node)',
		                              jsonb_build_object('flow', $2::text, 'node', $3::text))
		FROM workspaces WHERE tenant_id = $1`, tenant, flowID, nodeID).Scan(&node)
	if err != nil {
		return nil, mapErr("get workspace node", err)
	}
	if node == nil {
		return nil, fmt.Errorf("get workspace node: %w", ErrNotFound)
	}
	return node, nil
}

// IfAbsent, as the version a caller last saw, means it saw nothing stored: the save
// succeeds only while there is none.
const IfAbsent int64 = -1

// SaveWorkspace replaces the tenant's workspace document and returns its new version.
// ifVersion, when non-zero, is the version the caller last saw: ErrVersionMismatch when the
// stored one differs (or there is none yet). IfAbsent saves only over no workspace.
func SaveWorkspace(ctx context.Context, q db.DBTX, tenant string, flows []byte, ifVersion int64) (int64, time.Time, error) {
	var (
		version int64
		at      time.Time
	)
	err := q.QueryRow(ctx, `
		INSERT INTO workspaces AS w (tenant_id, flows) VALUES ($1, $2)
		ON CONFLICT (tenant_id) DO UPDATE SET flows = excluded.flows, version = w.version + 1, updated_at = now()
		WHERE $3 = 0 OR w.version = $3
		RETURNING version, updated_at`, tenant, flows, ifVersion).Scan(&version, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		// The conflict's WHERE refused the update: the stored version moved on.
		return 0, time.Time{}, fmt.Errorf("save workspace: %w", ErrVersionMismatch)
	}
	if err != nil {
		return 0, time.Time{}, mapErr("save workspace", err)
	}
	if ifVersion > 0 && version == 1 {
		// Inserted: there was nothing at the version the caller named.
		return 0, time.Time{}, fmt.Errorf("save workspace: %w", ErrVersionMismatch)
	}
	return version, at, nil
}
