package repo

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

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
