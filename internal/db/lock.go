package db

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SessionLock is a session-level advisory lock held on a connection of its own. The lock
// lives as long as the session: PostgreSQL releases it when the connection ends, so a
// holder killed outright (kill -9, a power cut) never leaves it taken.
type SessionLock struct {
	conn *pgx.Conn
	key  int64
}

// TryLock connects to url and takes the advisory lock key without waiting; held is false
// (and the connection closed) when another session holds it. url must reach PostgreSQL
// directly or through a session pooler: behind a transaction pooler the session that took
// the lock is handed to other clients, and the lock would guard nothing (serve's direct
// URL, as for LISTEN and the migrations' lock, is such a connection).
func TryLock(ctx context.Context, url string, key int64) (lock *SessionLock, held bool, err error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, false, fmt.Errorf("parse database URL: %w", redactURLError(err))
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, false, connectError(cfg, err)
	}
	if err := conn.QueryRow(cctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&held); err != nil || !held {
		_ = conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, false, fmt.Errorf("take advisory lock %d on %s: %w", key, describe(cfg), err)
		}
		return nil, false, nil
	}
	return &SessionLock{conn: conn, key: key}, true, nil
}

// Unlock releases the lock and closes its connection. Closing alone would release it too;
// the explicit unlock makes a session that outlives a failed close harmless.
func (l *SessionLock) Unlock(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var released bool
	err := l.conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, l.key).Scan(&released)
	if cerr := l.conn.Close(ctx); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("release advisory lock %d: %w", l.key, err)
	}
	return nil
}
