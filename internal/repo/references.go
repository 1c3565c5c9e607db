package repo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// This file holds the SQL of entry_references: the deployed node fields that name
// entries, written with each deploy and read by the delete safety net.

// ExportReferences returns every reference of the tenant's deployed nodes to entries, in
// (entry, flow, node, field) order.
func ExportReferences(ctx context.Context, q db.DBTX, tenant string) ([]Reference, error) {
	rows, err := q.Query(ctx, `
		SELECT entry_id, flow_id, node_id, node_type, field FROM entry_references
		WHERE tenant_id = $1 ORDER BY entry_id, flow_id, node_id, field`, tenant)
	if err != nil {
		return nil, mapErr("export references", err)
	}
	return collectReferences(rows, "export references")
}

// ImportReferences inserts restored references; each must name an entry of the tenant.
func ImportReferences(ctx context.Context, q db.DBTX, tenant string, refs []Reference) error {
	b := &pgx.Batch{}
	for _, r := range refs {
		b.Queue(`INSERT INTO entry_references (tenant_id, entry_id, flow_id, node_id, node_type, field)
			VALUES ($1, $2, $3, $4, $5, $6)`, tenant, r.EntryID, r.FlowID, r.NodeID, r.NodeType, r.Field)
	}
	return execBatch(ctx, q, b, "import references")
}

// Reference is one node field of the deployed workspace that names an entry.
type Reference struct {
	EntryID  string
	FlowID   string
	NodeID   string
	NodeType string
	Field    string
}

// RefCursor positions a page of references: the last (flow, node, field) seen.
type RefCursor struct {
	FlowID, NodeID, Field string
}

// ListReferences returns up to limit references to entryID in (flow, node, field) order,
// after the cursor when given.
func ListReferences(ctx context.Context, q db.DBTX, tenant, entryID string, after *RefCursor, limit int) ([]Reference, error) {
	args := []any{tenant, entryID, limit}
	cond := ""
	if after != nil {
		cond = ` AND (flow_id, node_id, field) > ($4, $5, $6)`
		args = append(args, after.FlowID, after.NodeID, after.Field)
	}
	rows, err := q.Query(ctx, `
		SELECT entry_id, flow_id, node_id, node_type, field FROM entry_references
		WHERE tenant_id = $1 AND entry_id = $2`+cond+`
		ORDER BY flow_id, node_id, field LIMIT $3`, args...)
	if err != nil {
		return nil, mapErr("list references", err)
	}
	return collectReferences(rows, "list references")
}

// collectReferences scans rows of (entry_id, flow_id, node_id, node_type, field) and
// closes them; the result is never nil, so an empty list encodes as [].
func collectReferences(rows pgx.Rows, what string) ([]Reference, error) {
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Reference])
	if err != nil {
		return nil, mapErr(what, err)
	}
	if out == nil {
		out = []Reference{}
	}
	return out, nil
}

// CountReferences returns how many references name entryID (0 for an unknown entry). The
// count is the entry's ref_count column, which triggers keep exact in the transaction of
// every reference change, so it costs one index lookup however many references there are.
func CountReferences(ctx context.Context, q db.DBTX, tenant, entryID string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT coalesce((SELECT ref_count FROM entries WHERE tenant_id = $1 AND id = $2), 0)`, tenant, entryID).Scan(&n)
	return n, mapErr("count references", err)
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

// ReferenceMove turns one stored reference into another of the same entry.
type ReferenceMove struct {
	From, To Reference
}

// MoveReferences rewrites stored references of tenant in place, each to another node
// field naming the same entry, in one statement. Because the entry a row names does not
// change, PostgreSQL skips the foreign key check it would make for an inserted row, and
// the entry's ref_count is unchanged (the update trigger adds and removes the same
// number). Every To must be free: no stored reference has that key.
func MoveReferences(ctx context.Context, q db.DBTX, tenant string, moves []ReferenceMove) error {
	if len(moves) == 0 {
		return nil
	}
	n := len(moves)
	entries, oldFlows, oldNodes, oldFields := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	flows, nodes, types, fields := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, m := range moves {
		if m.From.EntryID != m.To.EntryID {
			return fmt.Errorf("move references: %s to %s changes the entry", m.From.EntryID, m.To.EntryID)
		}
		entries[i], oldFlows[i], oldNodes[i], oldFields[i] = m.From.EntryID, m.From.FlowID, m.From.NodeID, m.From.Field
		flows[i], nodes[i], types[i], fields[i] = m.To.FlowID, m.To.NodeID, m.To.NodeType, m.To.Field
	}
	tag, err := q.Exec(ctx, `
		UPDATE entry_references r
		SET flow_id = d.flow_id, node_id = d.node_id, node_type = d.node_type, field = d.field
		FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
		     AS d (entry_id, old_flow_id, old_node_id, old_field, flow_id, node_id, node_type, field)
		WHERE r.tenant_id = $1 AND r.entry_id = d.entry_id AND r.flow_id = d.old_flow_id
		  AND r.node_id = d.old_node_id AND r.field = d.old_field`,
		tenant, entries, oldFlows, oldNodes, oldFields, flows, nodes, types, fields)
	if err != nil {
		return mapErr("move references", err)
	}
	if tag.RowsAffected() != int64(n) {
		return fmt.Errorf("move references: %d of %d stored references found", tag.RowsAffected(), n)
	}
	return nil
}
