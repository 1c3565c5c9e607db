package repo

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// This file holds the SQL of node_secrets: the sealed write-only values of nodes
// (credentials and inline TLS PEM), for deploys, reads, export and restore.

// ExportNodeSecrets returns every sealed node secret of the tenant, in (node, name) order.
func ExportNodeSecrets(ctx context.Context, q db.DBTX, tenant string) ([]NodeSecret, error) {
	return queryNodeSecrets(ctx, q, "export node secrets",
		`SELECT node_id, name, sealed, key_id FROM node_secrets WHERE tenant_id = $1 ORDER BY node_id, name`, tenant)
}

func queryNodeSecrets(ctx context.Context, q db.DBTX, what, sql string, args ...any) ([]NodeSecret, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, mapErr(what, err)
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
	return out, mapErr(what, rows.Err())
}

// ImportNodeSecrets inserts restored node secrets, sealed by the caller.
func ImportNodeSecrets(ctx context.Context, q db.DBTX, tenant string, rows []NodeSecret) error {
	b := &pgx.Batch{}
	for _, s := range rows {
		b.Queue(`INSERT INTO node_secrets (tenant_id, node_id, name, sealed, key_id) VALUES ($1, $2, $3, $4, $5)`,
			tenant, s.NodeID, s.Name, s.Sealed, s.KeyID)
	}
	return execBatch(ctx, q, b, "import node secrets")
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
	return queryNodeSecrets(ctx, q, "list node secrets", `
		SELECT node_id, name, sealed, key_id FROM node_secrets
		WHERE tenant_id = $1 AND ($2 = '' OR node_id = $2) ORDER BY node_id, name`, tenant, nodeID)
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
