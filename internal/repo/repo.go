// Package repo holds all SQL of the certificate store (pgx v5). Every function takes a
// db.DBTX so the caller decides the transaction, and every query names its tenant_id even
// though row-level security would refuse other tenants' rows anyway. Driver errors become
// the sentinels below in one place (mapErr), so callers branch on meaning, not on SQLSTATEs.
package repo

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopze/certstore/internal/db"
)

// execBatch sends b and reports the first statement of it that fails.
func execBatch(ctx context.Context, q db.DBTX, b *pgx.Batch, what string) error {
	if b.Len() == 0 {
		return nil
	}
	br := q.SendBatch(ctx, b)
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return mapErr(what, err)
		}
	}
	return mapErr(what, br.Close())
}

// Sentinel errors callers branch on.
var (
	ErrNotFound        = errors.New("not found")
	ErrDuplicate       = errors.New("already exists")
	ErrReferenced      = errors.New("still referenced")
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrInvalidData is a value PostgreSQL cannot store (a data exception, SQLSTATE class
	// 22): input checks should catch these first; this keeps any that slip through a 4xx.
	ErrInvalidData = errors.New("value cannot be stored")
)

// mapErr turns driver errors into sentinels, wrapping with what was being done.
func mapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%s: %w", what, ErrDuplicate)
		case "23503": // foreign_key_violation
			return fmt.Errorf("%s: %w", what, ErrReferenced)
		}
		if strings.HasPrefix(pgErr.Code, "22") { // data exception
			return fmt.Errorf("%s: %w (%s)", what, ErrInvalidData, pgErr.Message)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
