package repo

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopze/certstore/internal/db"
)

// KeyHolder is a serving process as the schedule of master key rotations sees it: a row
// of master_key_holders, refreshed at each of its checks.
type KeyHolder struct {
	// Replica identifies the process, at random.
	Replica string
	// Label names it for people: its host and data directory.
	Label string
	// Store names where its master keyring is read from (see keyrotation.StoreID).
	Store string
	// CurrentKeyID is the master key it wraps under; KeyIDs every master key it holds.
	CurrentKeyID string
	KeyIDs       []string
	// SeenAt is the database's time of its last check.
	SeenAt time.Time
}

// CheckKeySchedule is one check of the schedule, in one round trip: it refreshes me's row
// with a lease of ttl, drops the rows whose lease ran out, makes the schedule's row with
// start as its time when there is none (the first start of a server of this release), and
// returns the time of the last completed master rotation and the other live holders.
func CheckKeySchedule(ctx context.Context, q db.DBTX, me KeyHolder, ttl time.Duration, start time.Time) (last time.Time, others []KeyHolder, err error) {
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM master_key_holders WHERE expires_at < now()`)
	b.Queue(`INSERT INTO master_key_holders (replica, label, store, current_key_id, key_ids, seen_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, now(), now() + make_interval(secs => $6))
		ON CONFLICT (replica) DO UPDATE SET label = EXCLUDED.label, store = EXCLUDED.store,
			current_key_id = EXCLUDED.current_key_id, key_ids = EXCLUDED.key_ids,
			seen_at = EXCLUDED.seen_at, expires_at = EXCLUDED.expires_at`,
		me.Replica, me.Label, me.Store, me.CurrentKeyID, me.KeyIDs, ttl.Seconds())
	b.Queue(`INSERT INTO master_key_schedule (rotated_at) VALUES ($1) ON CONFLICT DO NOTHING`, start)
	b.Queue(`SELECT rotated_at FROM master_key_schedule`)
	b.Queue(`SELECT replica, label, store, current_key_id, key_ids, seen_at FROM master_key_holders
		WHERE replica <> $1 AND expires_at > now() ORDER BY label, replica`, me.Replica)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	for range 3 {
		if _, err := br.Exec(); err != nil {
			return last, nil, mapErr("check the key rotation schedule", err)
		}
	}
	if err := br.QueryRow().Scan(&last); err != nil {
		return last, nil, mapErr("read the key rotation schedule", err)
	}
	rows, err := br.Query()
	if err != nil {
		return last, nil, mapErr("list master key holders", err)
	}
	others, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyHolder, error) {
		var h KeyHolder
		err := r.Scan(&h.Replica, &h.Label, &h.Store, &h.CurrentKeyID, &h.KeyIDs, &h.SeenAt)
		return h, err
	})
	if err != nil {
		return last, nil, mapErr("list master key holders", err)
	}
	return last, others, mapErr("check the key rotation schedule", br.Close())
}

// MasterRotated records that a master key rotation to keyID completed at at: the
// schedule counts from it.
func MasterRotated(ctx context.Context, q db.DBTX, at time.Time, keyID string) error {
	_, err := q.Exec(ctx, `INSERT INTO master_key_schedule (rotated_at, key_id) VALUES ($1, $2)
		ON CONFLICT (singleton) DO UPDATE SET rotated_at = EXCLUDED.rotated_at, key_id = EXCLUDED.key_id`, at, keyID)
	return mapErr("record the master key rotation", err)
}

// DropKeyHolder deletes the row of a holder that stops.
func DropKeyHolder(ctx context.Context, q db.DBTX, replica string) error {
	_, err := q.Exec(ctx, `DELETE FROM master_key_holders WHERE replica = $1`, replica)
	return mapErr("drop master key holder", err)
}
