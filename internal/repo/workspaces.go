package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/material"
)

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

// SaveWorkspace replaces the tenant's workspace document and returns its new version.
// ifVersion, when non-zero, is the version the caller last saw: ErrVersionMismatch when the
// stored one differs (or there is none yet).
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
	if ifVersion != 0 && version == 1 {
		// Inserted: there was nothing at the version the caller named.
		return 0, time.Time{}, fmt.Errorf("save workspace: %w", ErrVersionMismatch)
	}
	return version, at, nil
}

// EntryKinds returns the type of every entry of tenant among ids, in one query. The rows
// are share-locked until the transaction ends, so a concurrent type change or delete waits
// for the deploy that reads them.
func EntryKinds(ctx context.Context, q db.DBTX, tenant string, ids []string) (map[string]material.Kind, error) {
	rows, err := q.Query(ctx, `SELECT id, type FROM entries WHERE tenant_id = $1 AND id = ANY($2) FOR KEY SHARE`, tenant, ids)
	if err != nil {
		return nil, mapErr("look up referenced entries", err)
	}
	defer rows.Close()
	out := make(map[string]material.Kind, len(ids))
	for rows.Next() {
		var (
			id string
			k  material.Kind
		)
		if err := rows.Scan(&id, &k); err != nil {
			return nil, mapErr("scan referenced entry", err)
		}
		out[id] = k
	}
	return out, mapErr("look up referenced entries", rows.Err())
}

// ListTenantReferences returns every reference of the tenant's workspace.
func ListTenantReferences(ctx context.Context, q db.DBTX, tenant string) ([]Reference, error) {
	rows, err := q.Query(ctx, `
		SELECT entry_id, flow_id, node_id, node_type, field FROM entry_references
		WHERE tenant_id = $1`, tenant)
	if err != nil {
		return nil, mapErr("list workspace references", err)
	}
	return collectReferences(rows, "list workspace references")
}

func referenceColumns(refs []Reference) (entries, flows, nodes, types, fields []string) {
	n := len(refs)
	entries, flows, nodes, types, fields = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, r := range refs {
		entries[i], flows[i], nodes[i], types[i], fields[i] = r.EntryID, r.FlowID, r.NodeID, r.NodeType, r.Field
	}
	return
}

// DeleteReferences removes the given references of tenant, in one statement.
func DeleteReferences(ctx context.Context, q db.DBTX, tenant string, refs []Reference) error {
	if len(refs) == 0 {
		return nil
	}
	entries, flows, nodes, _, fields := referenceColumns(refs)
	_, err := q.Exec(ctx, `
		DELETE FROM entry_references r
		USING unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS d (entry_id, flow_id, node_id, field)
		WHERE r.tenant_id = $1 AND r.entry_id = d.entry_id AND r.flow_id = d.flow_id
		  AND r.node_id = d.node_id AND r.field = d.field`, tenant, entries, flows, nodes, fields)
	return mapErr("delete references", err)
}

// InsertReferences adds references of tenant in one statement. A reference to an entry
// that does not exist (deleted since it was looked up) is ErrReferenced, from the foreign
// key. COPY would be the bulk path, but PostgreSQL refuses COPY FROM into a table under
// row-level security; one INSERT over unnest'ed arrays is the next best.
func InsertReferences(ctx context.Context, q db.DBTX, tenant string, refs []Reference) error {
	if len(refs) == 0 {
		return nil
	}
	entries, flows, nodes, types, fields := referenceColumns(refs)
	_, err := q.Exec(ctx, `
		INSERT INTO entry_references (tenant_id, entry_id, flow_id, node_id, node_type, field)
		SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])`,
		tenant, entries, flows, nodes, types, fields)
	return mapErr("insert references", err)
}

// NodeSecret is one sealed write-only value of a node: a credential or inline TLS PEM.
type NodeSecret struct {
	NodeID string
	Name   string
	Sealed []byte
	KeyID  string
}

// NodeSecretKey names a node secret.
type NodeSecretKey struct {
	NodeID, Name string
}

// ListNodeSecretKeys returns the names of every node secret of tenant, without the values.
func ListNodeSecretKeys(ctx context.Context, q db.DBTX, tenant string) ([]NodeSecretKey, error) {
	rows, err := q.Query(ctx, `SELECT node_id, name FROM node_secrets WHERE tenant_id = $1 ORDER BY node_id, name`, tenant)
	if err != nil {
		return nil, mapErr("list node secrets", err)
	}
	defer rows.Close()
	var out []NodeSecretKey
	for rows.Next() {
		var k NodeSecretKey
		if err := rows.Scan(&k.NodeID, &k.Name); err != nil {
			return nil, mapErr("scan node secret", err)
		}
		out = append(out, k)
	}
	return out, mapErr("list node secrets", rows.Err())
}

// ListNodeSecrets returns the sealed secrets of one node of tenant, or of every node when
// nodeID is empty, ordered by node and name.
func ListNodeSecrets(ctx context.Context, q db.DBTX, tenant, nodeID string) ([]NodeSecret, error) {
	rows, err := q.Query(ctx, `
		SELECT node_id, name, sealed, key_id FROM node_secrets
		WHERE tenant_id = $1 AND ($2 = '' OR node_id = $2) ORDER BY node_id, name`, tenant, nodeID)
	if err != nil {
		return nil, mapErr("list node secrets", err)
	}
	defer rows.Close()
	var out []NodeSecret
	for rows.Next() {
		var s NodeSecret
		if err := rows.Scan(&s.NodeID, &s.Name, &s.Sealed, &s.KeyID); err != nil {
			return nil, mapErr("scan node secret", err)
		}
		out = append(out, s)
	}
	return out, mapErr("list node secrets", rows.Err())
}

// UpsertNodeSecrets stores sealed values of tenant, replacing those of the same names, in
// one statement.
func UpsertNodeSecrets(ctx context.Context, q db.DBTX, tenant string, secrets []NodeSecret) error {
	if len(secrets) == 0 {
		return nil
	}
	n := len(secrets)
	nodes, names, sealed, keys := make([]string, n), make([]string, n), make([][]byte, n), make([]string, n)
	for i, s := range secrets {
		nodes[i], names[i], sealed[i], keys[i] = s.NodeID, s.Name, s.Sealed, s.KeyID
	}
	_, err := q.Exec(ctx, `
		INSERT INTO node_secrets (tenant_id, node_id, name, sealed, key_id)
		SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[])
		ON CONFLICT (tenant_id, node_id, name) DO UPDATE SET sealed = excluded.sealed, key_id = excluded.key_id`,
		tenant, nodes, names, sealed, keys)
	return mapErr("store node secrets", err)
}

// DeleteNodeSecrets removes the named node secrets of tenant, in one statement.
func DeleteNodeSecrets(ctx context.Context, q db.DBTX, tenant string, keys []NodeSecretKey) error {
	if len(keys) == 0 {
		return nil
	}
	nodes, names := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		nodes[i], names[i] = k.NodeID, k.Name
	}
	_, err := q.Exec(ctx, `
		DELETE FROM node_secrets s USING unnest($2::text[], $3::text[]) AS d (node_id, name)
		WHERE s.tenant_id = $1 AND s.node_id = d.node_id AND s.name = d.name`, tenant, nodes, names)
	return mapErr("delete node secrets", err)
}

// GetEntries returns the entries of tenant among ids (those that exist), in one query.
func GetEntries(ctx context.Context, q db.DBTX, tenant string, ids []string) ([]*Entry, error) {
	rows, err := q.Query(ctx, `SELECT `+entryColumns+` FROM entries WHERE tenant_id = $1 AND id = ANY($2)`, tenant, ids)
	if err != nil {
		return nil, mapErr("get entries", err)
	}
	return collectEntries(rows, "get entries")
}

// LookupEntries is GetEntries without a transaction of the caller's, in one round trip:
// the tenant setting and the query travel as one batch, which PostgreSQL runs as one
// implicit transaction, so the setting scopes the query for row-level security as
// db.InTenant would. Connection init calls it on every dial, where four round trips
// (begin, scope, query, commit) would be most of the cost.
func LookupEntries(ctx context.Context, q db.DBTX, tenant string, ids []string) ([]*Entry, error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('`+db.TenantSetting+`', $1, true)`, tenant)
	b.Queue(`SELECT `+entryColumns+` FROM entries WHERE tenant_id = $1 AND id = ANY($2)`, tenant, ids)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, mapErr("scope lookup to tenant", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, mapErr("look up entries", err)
	}
	out, err := collectEntries(rows, "look up entries")
	if err != nil {
		return nil, err
	}
	return out, mapErr("look up entries", br.Close())
}
