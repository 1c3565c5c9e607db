package keyrotation

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
)

// rewrapVersions moves up to limit of the tenant's entry versions to newID and returns
// how many it moved. Only the wrapped data keys change: a version's content is immutable.
func rewrapVersions(ctx context.Context, tx pgx.Tx, ring *envelope.Ring, tenant, newID string, limit int) (int, error) {
	versions, err := repo.VersionsToRewrap(ctx, tx, tenant, newID, limit)
	if err != nil {
		return 0, err
	}
	for _, v := range versions {
		if v.Sealed, err = sealing.RewrapPair(ring, sealing.Place{Tenant: tenant, EntryID: v.EntryID, Version: v.Version}, v.Sealed); err != nil {
			return 0, err
		}
	}
	return len(versions), repo.RewrapVersions(ctx, tx, versions)
}

// recordRotation audits one rewrap transaction of a tenant in that transaction; a batch
// that moved nothing is not recorded.
func recordRotation(ctx context.Context, tx pgx.Tx, tenant, newID string, rows int) error {
	if rows == 0 {
		return nil
	}
	return audit.Record(ctx, tx, audit.Event{Tenant: tenant, Action: audit.KeyRotate, Target: "tenant",
		Detail: map[string]any{"keyId": newID, "rowsRewrapped": rows}})
}
